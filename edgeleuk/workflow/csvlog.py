"""An append-only CSV log that survives crashes: one durable row per classified image.

Each row is flushed and fsync'ed before the next image is read, so a crash or
power cut loses at most the row being written. On reopening, a torn last line
(no trailing newline) is cut off: that image was not recorded and is classified
again.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from edgeleuk.errors import UsageError
from edgeleuk.files import read_csv


def _trim_torn_line(path: Path) -> int:
    """Cut a partial last line; return how many bytes were dropped."""
    with open(path, "r+b") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1  # 0 when even the header is torn
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return len(data) - keep


class CsvLog:
    """Append rows with fixed columns to ``path``; writes the header once.

    Use as a context manager. :attr:`rows` holds the rows already in the file
    when it was opened (an earlier run), as dicts.

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

    def _read_existing(self) -> list[dict[str, str]]:
        header, rows = read_csv(self.path)
        if not header:  # empty file: the header is written on opening
            return []
        if header != self.columns:
            raise UsageError(
                f"{self.path} exists with columns {header}, not {self.columns}; "
                "choose another --out (it is not a predictions file this command can continue)"
            )
        return rows

    def _sync(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, row: Mapping[str, object]) -> None:
        """Write one row and make it durable before returning."""
        if self._writer is None:
            raise RuntimeError("CsvLog is not open; use it as a context manager")
        self._writer.writerow(row)
        self._sync()
