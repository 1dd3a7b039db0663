"""The crash-safe CSV log under ``watch``: whole records only, our own header only, exact refusals.

Unit tests of :mod:`edgeleuk.workflow.csvlog`, no model: what a restart keeps, trims and refuses.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edgeleuk.core.errors import DataError, OutputError, UsageError
from edgeleuk.workflow import csvlog
from edgeleuk.workflow.csvlog import CsvLog, _complete_records_end

COLUMNS = ["path", "status"]
NOT_OURS = "; choose another --out (it is not a predictions file this command can continue)"


def _refusal(path: Path, columns: object) -> str:
    return f"{path} exists with columns {columns}, not {COLUMNS}{NOT_OURS}"


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", 0),
        (b"path,status\n", 12),
        (b"path,status\nx,ok", 12),
        (b'x,"a,b"\n', 8),  # the record ends right after a closing quote: a newline at the piece's start
        (b'x,"a,b"\ny,"c', 8),
        (b'"a\nb",ok\n', 9),  # the newline inside quotes ends nothing
        (b'"a\nb",ok', 0),
        (b'"a""\nb",ok\n"c', 11),  # a doubled quote inside a field
        (b"\n\n", 2),
    ],
)
def test_complete_records_end_finds_the_last_newline_outside_quotes(data: bytes, end: int) -> None:
    assert _complete_records_end(data) == end


def test_a_row_ending_in_a_quoted_field_is_whole_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    with CsvLog(out, COLUMNS) as log:
        log.append({"path": "x.bmp", "status": "a,b"})  # written as x.bmp,"a,b"
    with CsvLog(out, COLUMNS) as log:
        assert log.trimmed_bytes == 0
        assert log.rows == [{"path": "x.bmp", "status": "a,b"}]
    assert out.read_bytes() == b'path,status\nx.bmp,"a,b"\n'


def test_a_torn_header_is_cut_and_written_again(tmp_path: Path) -> None:
    for torn in (b"pa", b"path,st", b"\xef\xbb\xbfpath,"):  # with or without a byte-order mark
        out = tmp_path / "p.csv"
        out.write_bytes(torn)
        with CsvLog(out, COLUMNS) as log:
            assert (log.rows, log.trimmed_bytes) == ([], len(torn))
        assert out.read_bytes() == b"path,status\n"


def test_a_torn_first_line_that_is_not_our_header_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    out.write_bytes(b"a,b")
    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS).__enter__()
    assert str(refused.value) == _refusal(out, "a,b")
    out.write_bytes(b"path,stat,us")  # starts like ours but goes on otherwise
    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS).__enter__()
    assert str(refused.value) == _refusal(out, "path,stat,us")
    assert out.read_bytes() == b"path,stat,us"


def test_another_header_is_refused_with_its_columns_as_written(tmp_path: Path) -> None:
    out = tmp_path / "other.csv"
    out.write_bytes(b" a , b \n1,2\n")
    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS).__enter__()
    assert str(refused.value) == _refusal(out, "a , b")
    assert out.read_bytes() == b" a , b \n1,2\n"


def test_a_header_that_is_not_utf8_is_refused_as_such(tmp_path: Path) -> None:
    out = tmp_path / "latin1.csv"
    out.write_bytes(b"caf\xe9,status\n1,2\n")
    explain = [None]  # an explanation is only asked for a header that could be read
    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS, explain=lambda header: explain.append(header) or "older").__enter__()
    assert str(refused.value) == _refusal(out, "that are not UTF-8 text")
    assert explain == [None]


def test_the_header_check_reads_at_most_64_kib_of_the_first_line(tmp_path: Path) -> None:
    """A hostile file without line breaks costs a bounded read: the refusal quotes only its first 64 KiB."""
    out = tmp_path / "blob.csv"
    out.write_bytes(b"a" * 70_000 + b"\n")
    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS).__enter__()
    assert str(refused.value) == _refusal(out, "a" * (1 << 16))


def test_explain_says_why_an_older_file_cannot_be_continued(tmp_path: Path) -> None:
    out = tmp_path / "old.csv"
    out.write_bytes(b"path , old\nx.bmp,1\n")
    seen: list[object] = []

    def explain(header: list[str]) -> str | None:
        seen.append(header)
        return f"an older file with {header}" if header == ["path", "old"] else None

    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS, explain=explain).__enter__()
    assert str(refused.value) == f"{out} cannot be continued: an older file with ['path', 'old']"
    assert seen == [["path", "old"]]
    # No explanation for this header: the plain refusal, naming the columns as read.
    out.write_bytes(b"a,b\n")
    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS, explain=explain).__enter__()
    assert str(refused.value) == _refusal(out, ["a", "b"])
    assert out.read_bytes() == b"a,b\n"


def test_an_unusable_path_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "p.csv"
    with pytest.raises(UsageError) as refused:
        CsvLog(out, COLUMNS).__enter__()
    assert str(refused.value) == f"cannot write {out}: File exists (choose another --out)"  # mkdir of the file's parent
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(UsageError) as refused:
        CsvLog(folder, COLUMNS).read_rows()
    assert str(refused.value) == f"cannot write {folder}: Is a directory (choose another --out)"


def test_rows_that_are_not_csv_text_are_a_data_error(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    out.write_bytes(b"path,status\n\xff\xfe,ok\n")
    with pytest.raises(DataError, match="cannot read"):
        CsvLog(out, COLUMNS).read_rows()
    assert out.read_bytes() == b"path,status\n\xff\xfe,ok\n"


def test_rows_are_read_back_as_plain_text_and_a_missing_file_has_none(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    assert CsvLog(out, COLUMNS).read_rows() == [] and not out.exists()
    with CsvLog(out, COLUMNS) as log:
        assert log.rows == [] and log.trimmed_bytes == 0
        log.append({"path": "=1+1.bmp", "status": "ok", "extra": "ignored"})
    assert out.read_bytes() == b"path,status\n'=1+1.bmp,ok\n"  # spreadsheet-safe on disk
    assert CsvLog(out, COLUMNS).read_rows() == [{"path": "=1+1.bmp", "status": "ok"}]
    out.write_bytes(b"")  # an empty file: the header is written on opening
    with CsvLog(out, COLUMNS) as log:
        assert log.rows == []
    assert out.read_bytes() == b"path,status\n"


def test_append_outside_the_context_is_refused(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "p.csv", COLUMNS)
    with pytest.raises(RuntimeError, match=r"^CsvLog is not open; use it as a context manager$"):
        log.append({"path": "a", "status": "ok"})
    with log:
        log.append({"path": "a", "status": "ok"})
    with pytest.raises(RuntimeError, match=r"^CsvLog is not open; use it as a context manager$"):
        log.append({"path": "b", "status": "ok"})
    assert (tmp_path / "p.csv").read_bytes() == b"path,status\na,ok\n"


def test_a_failed_row_is_cut_back_and_later_rows_follow_whole_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "p.csv"
    real = os.write
    fail = {"on": False}

    def write(fd: int, data) -> int:
        if fail["on"]:
            real(fd, bytes(data[:3]))  # part of the row reaches the disk, then it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(csvlog.os, "write", write)
    with CsvLog(out, COLUMNS) as log:
        log.append({"path": "a.bmp", "status": "ok"})
        fail["on"] = True
        with pytest.raises(OutputError) as failed:
            log.append({"path": "b.bmp", "status": "ok"})
        assert out.read_bytes() == b"path,status\na.bmp,ok\n"
        fail["on"] = False
        log.append({"path": "c.bmp", "status": "ok"})
    assert str(failed.value) == (
        f"cannot write {out}: No space left on device; the rows written before are kept and nothing "
        "half-written is left. Free space (or make the folder writable) and run again to continue"
    )
    assert out.read_bytes() == b"path,status\na.bmp,ok\nc.bmp,ok\n"


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(csvlog.os, "write", lambda fd, data: real(fd, bytes(data[:2])))  # two bytes a call
    out = tmp_path / "p.csv"
    with CsvLog(out, COLUMNS) as log:
        log.append({"path": "abc.bmp", "status": "ok"})
    assert out.read_bytes() == b"path,status\nabc.bmp,ok\n"


def test_a_header_that_cannot_be_written_leaves_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[int] = []
    real_close = os.close
    monkeypatch.setattr(csvlog.os, "close", lambda fd: (closed.append(fd), real_close(fd))[1])
    monkeypatch.setattr(csvlog.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EROFS, "ro")))
    log = CsvLog(tmp_path / "p.csv", COLUMNS)
    with pytest.raises(OutputError, match="cannot write .*: ro; the rows written before are kept"):
        log.__enter__()
    assert len(closed) == 1 and log._fd is None
    assert (tmp_path / "p.csv").read_bytes() == b""  # the header was cut back


def test_a_new_log_is_made_with_its_folders_and_the_usual_file_mode(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "p.csv"
    umask = os.umask(0o022)
    try:
        with CsvLog(out, COLUMNS) as log:
            log.append({"path": "x.bmp", "status": "ok"})
    finally:
        os.umask(umask)
    assert out.read_bytes() == b"path,status\nx.bmp,ok\n"
    assert out.stat().st_mode & 0o777 == 0o644  # 0o666 less the umask: not executable


def test_line_breaks_inside_a_cell_read_back_exactly(tmp_path: Path) -> None:
    """A lone carriage return, which the csv module leaves unquoted, is quoted: one row, read back as written."""
    out = tmp_path / "p.csv"
    with CsvLog(out, COLUMNS) as log:
        log.append({"path": "a\r\nb.bmp", "status": "ok"})
        log.append({"path": "c\rd.bmp", "status": "ok"})
        log.append({"path": "e.bmp", "status": "ok"})
    assert out.read_bytes() == b'path,status\n"a\r\nb.bmp","ok"\n"c\rd.bmp","ok"\ne.bmp,ok\n'
    with CsvLog(out, COLUMNS) as log:
        assert [r["path"] for r in log.rows] == ["a\r\nb.bmp", "c\rd.bmp", "e.bmp"] and log.trimmed_bytes == 0


def test_a_torn_last_row_is_cut_and_its_bytes_counted(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    out.write_bytes(b"path,status\na.bmp,ok\nb.b")
    with CsvLog(out, COLUMNS) as log:
        assert (log.rows, log.trimmed_bytes) == ([{"path": "a.bmp", "status": "ok"}], 3)
        log.append({"path": "b.bmp", "status": "ok"})
    assert out.read_bytes() == b"path,status\na.bmp,ok\nb.bmp,ok\n"


def test_read_rows_refuses_other_columns_even_past_the_first_line_check(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The header the rows are read with is checked again (the file may change between the two reads)."""
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n")
    monkeypatch.setattr(CsvLog, "_check_header", lambda self: None)
    with pytest.raises(UsageError) as caught:
        CsvLog(path, ["path", "cell"]).read_rows()
    assert str(caught.value) == (f"{path} exists with columns ['a', 'b'], not ['path', 'cell']; choose another "
                                 "--out (it is not a predictions file this command can continue)")

