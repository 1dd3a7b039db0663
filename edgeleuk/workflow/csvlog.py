"""An append-only CSV log that survives crashes: one durable row per classified image.

Each row is flushed and fsync'ed before the next image is read, so a crash or
power cut loses at most the row being written. On reopening, a torn last row
is cut off: that image was not recorded and is classified again. A row is torn
when the file does not end with a newline that closes a record, which includes a
row cut inside a quoted field that holds a newline (a file name with a line
break): a plain "ends with a newline" test would keep it, and every later row
would then be read as part of that field.

Cells are written spreadsheet-safe and read back exactly
(:func:`edgeleuk.csvcells.sheet_row` / :func:`edgeleuk.csvcells.plain_row`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from edgeleuk.csvcells import plain_row, sheet_row
from edgeleuk.errors import UsageError
from edgeleuk.files import read_csv


def _complete_records_end(data: bytes) -> int:
    """Length of the longest prefix of ``data`` made of whole CSV records.

    A record ends at a newline outside quotes. Splitting at every ``"`` leaves the
    text outside quotes in the even-numbered pieces (a doubled quote inside a field
    gives an empty outside piece); UTF-8 never uses the bytes of ``"`` or newline
    inside a multi-byte character.
    """
    end = pos = 0
    for k, piece in enumerate(data.split(b'"')):
        newline = piece.rfind(b"\n") if k % 2 == 0 else -1
        if newline >= 0:
            end = pos + newline + 1
        pos += len(piece) + 1
    return end


def _trim_torn_line(path: Path) -> int:
    """Cut a partial last record; return how many bytes were dropped."""
    with open(path, "r+b") as fh:
        data = fh.read()
        keep = _complete_records_end(data)  # 0 when even the header is torn
        if keep == len(data):
            return 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return len(data) - keep


class CsvLog:
    """Append rows with fixed columns to ``path``; writes the header once.

    Use as a context manager. :attr:`rows` holds the rows already in the file
    when it was opened (an earlier run), as dicts of plain text (spreadsheet
    quoting undone).

    Raises:
        UsageError: The existing file has other columns (it is not ours to append to).
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.rows: list[dict[str, str]] = []
        self.trimmed_bytes = 0
        self._fh: IO[str] | None = None
        self._writer: csv.DictWriter | None = None

    def __enter__(self) -> CsvLog:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._check_header()  # before anything is cut: never trim someone else's file
            self.trimmed_bytes = _trim_torn_line(self.path)
            self.rows = self._read_existing()
        self._fh = open(self.path, "a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(
            self._fh, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore"
        )
        if self._fh.tell() == 0:
            self._writer.writeheader()
            self._sync()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _refuse(self, header: object) -> UsageError:
        return UsageError(
            f"{self.path} exists with columns {header}, not {self.columns}; "
            "choose another --out (it is not a predictions file this command can continue)"
        )

    def _check_header(self) -> None:
        """Refuse a file whose first line is not our header (or, torn, the start of it)."""
        with open(self.path, "rb") as fh:
            first = fh.readline(1 << 16)
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise self._refuse("that are not UTF-8 text") from None
        ours = ",".join(self.columns)
        if text.endswith("\n"):
            if [h.strip() for h in next(csv.reader([text]), [])] != self.columns:
                raise self._refuse(text.strip())
        elif not ours.startswith(text):  # a torn header is cut; anything else is not ours
            raise self._refuse(text)

    def _read_existing(self) -> list[dict[str, str]]:
        header, rows = read_csv(self.path)
        if not header:  # empty file: the header is written on opening
            return []
        if header != self.columns:
            raise self._refuse(header)
        return [plain_row(r) for r in rows]

    def _sync(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, row: Mapping[str, object]) -> None:
        """Write one row (cells made spreadsheet-safe) and make it durable before returning."""
        if self._writer is None:
            raise RuntimeError("CsvLog is not open; use it as a context manager")
        self._writer.writerow(sheet_row(row))
        self._sync()
