"""An append-only CSV log that survives crashes: one durable row per classified image.

Each row is flushed and fsync'ed before the next image is read, so a crash or
power cut loses at most the row being written. On reopening, a torn last row
is cut off: that image was not recorded and is classified again. A row is torn
when the file does not end with a newline that closes a record, which includes a
row cut inside a quoted field that holds a newline (a file name with a line
break): a plain "ends with a newline" test would keep it, and every later row
would then be read as part of that field. A row that cannot be written (disk
full, folder turned read-only) is cut off at once, so the file holds only whole
rows, and :class:`OutputError` says so.

Cells are written spreadsheet-safe and read back exactly
(:func:`edgeleuk.io.csvcells.sheet_row` / :func:`edgeleuk.io.csvcells.plain_row`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgeleuk.core.errors import DataError, OutputError, UsageError
from edgeleuk.io.atomic import check_target
from edgeleuk.io.csvcells import plain_row, sheet_row


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


def keep_rows(path: Path, n: int) -> int:
    """Cut ``path`` after its header and first ``n`` rows (whole CSV records); return the bytes dropped.

    For a writer that commits several rows as one unit (``watch --fields``: a field's rows) and
    records elsewhere how many rows are committed: rows past that mark are an unfinished unit.
    """
    with open(path, "r+b") as fh:
        data = fh.read()
        ends, pos = [], 0
        for k, piece in enumerate(data.split(b'"')):  # newlines outside quotes end records
            i = piece.find(b"\n") if k % 2 == 0 else -1
            while i >= 0:
                ends.append(pos + i + 1)
                i = piece.find(b"\n", i + 1)
            pos += len(piece) + 1
        if n + 1 >= len(ends):  # the header and n rows are all there is (or fewer): nothing to cut
            return 0
        keep = ends[n]
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return len(data) - keep


class CsvLog:
    """Append rows with fixed columns to ``path``; writes the header once.

    Use as a context manager. :attr:`rows` holds the rows already in the file
    when it was opened (an earlier run), as dicts of plain text (spreadsheet
    quoting undone); :meth:`read_rows` reads them without opening, so a caller can
    decide whether to continue the file before anything in it changes.

    Args:
        path: The file.
        columns: Its columns, in order.
        explain: Given an existing file's other header, why it cannot be continued and what to
            do, when that is more than "other columns" (an older file of the same kind).

    Raises:
        UsageError: The existing file has other columns (it is not ours to append to), or
            ``path`` is a link, a device or a FIFO (:func:`edgeleuk.io.atomic.check_target`).
    """

    def __init__(
        self, path: Path, columns: Sequence[str], explain: Callable[[list[str]], str | None] | None = None
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self._explain = explain
        self.rows: list[dict[str, str]] = []
        self.trimmed_bytes = 0
        self._fd: int | None = None
        self._size = 0  # bytes of whole rows in the file

    def __enter__(self) -> CsvLog:  # noqa: PYI034 (typing.Self needs Python 3.11)
        check_target(self.path)  # a FIFO would block the header check; a link would take rows elsewhere
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self.rows = self.read_rows()  # before anything is cut: never trim someone else's file
                self.trimmed_bytes = _trim_torn_line(self.path)
            # A raw descriptor, not a buffered file: a failed row can be cut off exactly.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:  # before any work: the same answer as predict's check (exit 2)
            raise self._unusable(exc) from exc
        self._size = os.fstat(self._fd).st_size
        if self._size == 0:
            try:
                self._write({c: c for c in self.columns})  # the header row
            except OutputError:
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _unusable(self, exc: OSError) -> UsageError:
        return UsageError(f"cannot write {self.path}: {exc.strerror or exc} (choose another --out)")

    def _refuse(self, header: object) -> UsageError:
        why = self._explain(header) if self._explain is not None and isinstance(header, list) else None
        if why:
            return UsageError(f"{self.path} cannot be continued: {why}")
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
            header = [h.strip() for h in next(csv.reader([text]), [])]
            if header != self.columns:
                raise self._refuse(header if self._explain is not None else text.strip())
        elif not ours.startswith(text):  # a torn header is cut; anything else is not ours
            raise self._refuse(text)

    def read_rows(self) -> list[dict[str, str]]:
        """The whole rows already in the file, as plain text; the file is not changed.

        A torn last row (see :func:`_complete_records_end`) is left out: it is cut when the
        file is opened. No file, or an empty one, has no rows.

        Raises:
            UsageError: The file has other columns, or is not a file this process can use.
            DataError: Its rows are not CSV text.
        """
        if not self.path.exists():
            return []
        try:
            self._check_header()
            data = self.path.read_bytes()
        except OSError as exc:  # a folder, no permission: the same answer as when opening
            raise self._unusable(exc) from exc
        try:
            text = data[: _complete_records_end(data)].decode("utf-8-sig")
            reader = csv.DictReader(io.StringIO(text, newline=""))
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {self.path}: {exc}") from exc
        if not header:  # empty file (or a torn header): the header is written on opening
            return []
        if header != self.columns:
            raise self._refuse(header)
        return [plain_row(r) for r in rows]

    def _encode(self, row: Mapping[str, object]) -> bytes:
        text = io.StringIO()
        # The csv module quotes a cell that holds the line terminator ("\n") but not a lone "\r", which
        # a reader takes for a line break: a file name with a carriage return would read back as two
        # rows, and its image be classified again on every restart. Such a row has every cell quoted.
        bare_cr = any("\r" in str(v) for v in row.values() if v is not None)
        quoting = csv.QUOTE_ALL if bare_cr else csv.QUOTE_MINIMAL
        writer = csv.DictWriter(
            text, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore", quoting=quoting
        )
        writer.writerow(row)
        return text.getvalue().encode("utf-8")

    def _write(self, row: Mapping[str, object]) -> None:
        """Write one whole row and fsync it, or leave the file as it was and raise OutputError."""
        assert self._fd is not None
        encoded = self._encode(row)
        data = memoryview(encoded)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError as exc:
            self._cut_back()
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}; the rows written before are kept "
                "and nothing half-written is left. Free space (or make the folder writable) and run "
                "again to continue"
            ) from exc
        self._size += len(encoded)

    def _cut_back(self) -> None:
        """Drop the bytes of a row that did not make it whole (best effort: the disk is failing)."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError:
            pass  # a torn last line is also cut off the next time the file is opened

    def append(self, row: Mapping[str, object]) -> None:
        """Write one row (cells made spreadsheet-safe) and make it durable before returning.

        Raises:
            OutputError: The row could not be written (disk full, read-only); the file
                still ends with the previous whole row.
        """
        if self._fd is None:
            raise RuntimeError("CsvLog is not open; use it as a context manager")
        self._write(sheet_row(row))
