"""``watch`` left running overnight: full disk, read-only output, links, large folders, overwrites.

Full disk and read-only output, links out of the tree, large folders, images overwritten
under the same name.
"""

from __future__ import annotations

import csv
import errno
import os
import threading
import time
from pathlib import Path

import pytest
from runtime_support import FlakyBackend
from typer.testing import CliRunner
from workflow_support import write_cell

from edgeleuk.cli import app
from edgeleuk.core.errors import OutputError, UsageError
from edgeleuk.io.files import list_images
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.workflow import arrivals, csvlog
from edgeleuk.workflow.arrivals import ArrivalTracker, FolderScanner
from edgeleuk.workflow.predict import PredictOptions, predict
from edgeleuk.workflow.watch import watch_folder

GREYS = [40, 120, 170, 230]


def _classifier() -> Classifier:
    return Classifier(FlakyBackend(), batch_size=2, workers=1)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cells(folder: Path, n: int = 4) -> list[str]:
    return [write_cell(folder / f"{k + 1}.bmp", GREYS[k % 4]).name for k in range(n)]


def _failing_writes(
    monkeypatch: pytest.MonkeyPatch, out: Path, err: int, after_rows: int, partial: bool
) -> None:
    """Make writes to ``out`` fail after ``after_rows`` rows (and the header), as a full disk does.

    With ``partial`` the failing write first puts half its bytes on disk, like a disk that
    fills up in the middle of a row. Other descriptors are left alone.
    """
    real = os.write
    calls = {"n": 0}

    def write(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") != str(out):
            return real(fd, data)
        calls["n"] += 1
        if calls["n"] > after_rows + 1:  # the header is write 1
            if partial:
                real(fd, bytes(data[: len(data) // 2]))
            raise OSError(err, os.strerror(err))
        return real(fd, data)

    monkeypatch.setattr(csvlog.os, "write", write)


@pytest.mark.parametrize(
    ("err", "partial", "says"),
    [(errno.ENOSPC, True, "No space left"), (errno.EROFS, False, "Read-only file system")],
)
def test_full_or_read_only_output_stops_watch_keeping_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, partial: bool, says: str
) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    names = _cells(folder)
    _failing_writes(monkeypatch, out, err, after_rows=2, partial=partial)
    with pytest.raises(OutputError, match=says) as stopped:
        watch_folder(folder, classifier=_classifier(), out=out, interval=0.02, max_idle=30)
    assert stopped.value.exit_code == 1
    assert "rows written before are kept" in str(stopped.value)
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 3  # header and two whole rows, no half row
    assert [r["status"] for r in _rows(out)] == ["ok", "ok"]
    monkeypatch.undo()  # space freed: a restart finishes the job, nothing twice
    again = watch_folder(folder, classifier=_classifier(), out=out, interval=0.02, max_idle=0.5)
    assert sorted(r["path"] for r in _rows(out)) == sorted(names)
    assert (again.resumed, again.classified) == (2, 2)


def test_watch_cli_exits_1_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 2)
    _failing_writes(monkeypatch, out, errno.ENOSPC, after_rows=0, partial=True)
    monkeypatch.setattr(Classifier, "load", classmethod(lambda cls, *args, **kwargs: _classifier()))
    result = CliRunner().invoke(
        app, ["watch", str(folder), "--model", "m.onnx", "--out", str(out), "--interval", "0.05"]
    )
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.stderr and "Traceback" not in result.output
    assert out.read_text(encoding="utf-8").count("\n") == 1  # just the header


def test_unwritable_output_is_refused_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _cells(folder, 1)
    (tmp_path / "file").write_text("a file, not a folder")
    backend = FlakyBackend()
    # Root ignores permission bits, so "cannot create" is made with a parent that is a file.
    with pytest.raises(UsageError, match="cannot write"):
        watch_folder(folder, classifier=Classifier(backend), out=tmp_path / "file" / "p.csv", max_idle=0.1)
    assert backend.calls == 0


def test_predict_on_a_folder_turned_read_only_stops_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    folder, out = tmp_path / "in", tmp_path / "out" / "p.csv"
    _cells(folder, 3)
    rescue = tmp_path / "rescue"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    monkeypatch.setattr("edgeleuk.workflow.predict.load_classifier", lambda model, options: _classifier())
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if Path(dir) == out.parent:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr("edgeleuk.io.atomic.tempfile.mkstemp", read_only)
    with pytest.raises(OutputError, match="Read-only file system") as stopped:
        predict(folder, model=tmp_path / "m.onnx", out=out, options=PredictOptions(progress=False))
    assert stopped.value.exit_code == 1
    assert list(out.parent.iterdir()) == []  # nothing half-written
    (saved,) = rescue.iterdir()
    assert len(_rows(saved)) == 3 and str(saved) in str(stopped.value)


def test_recursive_listing_does_not_follow_links_up_or_out_of_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "session"
    write_cell(root / "a" / "1.bmp", 100)
    write_cell(tmp_path / "outside" / "2.bmp", 100)
    (root / "to_root").symlink_to("/")
    (root / "a" / "up").symlink_to("..")  # a loop back to the session folder
    (root / "to_parent").symlink_to(tmp_path)
    (root / "again").symlink_to(root / "a")  # inside the tree: listed once, not twice
    (root / "linked_data").symlink_to(tmp_path / "outside")  # a data set linked in from elsewhere
    # predict follows a linked-in data set, never a link to the root or above it...
    assert list_images(root, recursive=True) == [root / "a" / "1.bmp", root / "linked_data" / "2.bmp"]
    # ...and watch stays inside the folder it was given.
    assert [p.relative_to(root) for p in FolderScanner(root, recursive=True).list()] == [Path("a/1.bmp")]


def test_watch_recursive_with_a_link_to_root_finishes(tmp_path: Path) -> None:
    root, out = tmp_path / "session", tmp_path / "p.csv"
    _cells(root / "sub", 2)
    (root / "sub" / "system").symlink_to("/")
    summary = watch_folder(
        root, classifier=_classifier(), out=out, interval=0.02, max_idle=0.5, recursive=True
    )
    assert sorted(r["path"] for r in _rows(out)) == ["sub/1.bmp", "sub/2.bmp"]
    assert summary.classified == 2


def test_scanner_lists_again_only_folders_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "session"
    for sub in ("a", "b", "c"):
        for k in range(3):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / f"{k}.bmp").write_bytes(b"x")
    past = time.time() - 60
    for folder in (root, root / "a", root / "b", root / "c"):
        os.utime(folder, (past, past))  # settled folders, not modified within a clock tick
    listed: list[Path] = []
    real = arrivals.image_entries
    monkeypatch.setattr(arrivals, "image_entries", lambda folder, **kw: (listed.append(folder), real(folder, **kw))[1])
    scanner = FolderScanner(root, recursive=True)
    assert len(scanner.list()) == 9 and len(listed) == 4
    listed.clear()
    assert len(scanner.list()) == 9 and listed == []  # nothing changed: nothing listed again
    (root / "b" / "new.bmp").write_bytes(b"x")
    found = scanner.list()
    assert root / "b" / "new.bmp" in found and len(found) == 10
    assert listed == [root / "b"]


def test_tracker_looks_at_a_bounded_number_of_new_files_per_poll(tmp_path: Path) -> None:
    files = []
    for k in range(10):
        (tmp_path / f"{k}.bmp").write_bytes(b"x")
        files.append(tmp_path / f"{k}.bmp")
    tracker = ArrivalTracker(max_pending=3)
    tracker.poll(files)
    ready = tracker.poll(files)
    assert ready == files[:3]
    for f in ready:
        assert tracker.accept(f, failed=False)
    tracker.poll(files)
    assert tracker.poll(files) == files[3:6]  # the next three, once the first are done


def test_tracker_reads_a_file_again_when_it_is_overwritten(tmp_path: Path) -> None:
    f = tmp_path / "1.bmp"
    f.write_bytes(b"first image")
    tracker = ArrivalTracker()
    tracker.poll([f])
    assert tracker.poll([f]) == [f]
    assert tracker.accept(f, failed=False)
    assert tracker.poll([f]) == []
    f.write_bytes(b"second image, same name")
    assert tracker.poll([f]) == []  # noticed; wait until it is stable again
    assert tracker.poll([f]) == [f]


def test_tracker_takes_resumed_files_as_they_are(tmp_path: Path) -> None:
    f = tmp_path / "1.bmp"
    f.write_bytes(b"classified in an earlier session")
    tracker = ArrivalTracker(done=dict.fromkeys([ArrivalTracker.key(f)]))
    assert tracker.poll([f]) == [] and tracker.poll([f]) == []  # its signature is recorded, not changed


def test_watch_gives_an_overwritten_image_a_new_row(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    cell = write_cell(folder / "1.bmp", GREYS[0])
    done = threading.Event()

    def overwrite() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and len(_rows(out)) == 1):
            time.sleep(0.02)
        write_cell(cell, GREYS[3])  # same name, same size, new pixels and mtime
        later = time.time() + 5
        os.utime(cell, (later, later))
        done.set()

    thread = threading.Thread(target=overwrite)
    thread.start()
    try:
        summary = watch_folder(
            folder, classifier=_classifier(), out=out, interval=0.02, max_files=2, max_idle=30
        )
    finally:
        thread.join()
    rows = _rows(out)
    assert [r["path"] for r in rows] == ["1.bmp", "1.bmp"]
    assert [r["label"] for r in rows] == ["hem", "all"]
    assert summary.classified == 2 and done.is_set()


def test_watch_follows_no_file_link_out_of_the_folder(tmp_path: Path) -> None:
    root, out = tmp_path / "session", tmp_path / "p.csv"
    _cells(root, 2)
    secret = write_cell(tmp_path / "secret" / "private.bmp", 200)
    (root / "leak.bmp").symlink_to(secret)  # a file link out: refused, its target never read
    (root / "alias.bmp").symlink_to(root / "1.bmp")  # a file link inside the folder: classified
    summary = watch_folder(root, classifier=_classifier(), out=out, interval=0.02, max_idle=0.5, give_up_s=0)
    rows = {r["path"]: r for r in _rows(out)}
    assert sorted(rows) == ["1.bmp", "2.bmp", "alias.bmp", "leak.bmp"]
    assert rows["leak.bmp"]["status"] == "error" and "leading out of the watched folder" in rows["leak.bmp"]["error"]
    assert rows["leak.bmp"]["prob_all"] == "" and rows["alias.bmp"]["status"] == "ok"
    assert (summary.classified, summary.failed) == (3, 1)


def test_watch_log_shows_control_characters_in_names_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, out = tmp_path / "session", tmp_path / "p.csv"
    forged = "x.bmp\nINFO edgeleuk.workflow.watch: fake.bmp: ALL (p=0.999)\x1b[2J.bmp"
    write_cell(root / forged, 40)
    (root / "bad\n\x1b[31m.bmp").write_bytes(b"BM not a bitmap")
    with caplog.at_level("INFO", logger="edgeleuk.workflow"):
        watch_folder(root, classifier=_classifier(), out=out, interval=0.02, max_idle=0.5, give_up_s=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeleuk.workflow.watch"]
    named = [m for m in lines if "bmp" in m]
    assert len(named) == 2, lines
    assert all("\n" not in m and "\x1b" not in m for m in lines)
    assert any(m.startswith("x.bmp\\nINFO edgeleuk.workflow.watch: fake.bmp") and "\\x1b[2J" in m for m in named)


def test_watch_refuses_an_output_that_is_a_link(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "session", tmp_path / "elsewhere.csv"
    _cells(root, 1)
    out = tmp_path / "p.csv"
    out.symlink_to(elsewhere)
    with pytest.raises(UsageError, match="symbolic link"):
        watch_folder(root, classifier=_classifier(), out=out, interval=0.02, max_idle=0.5, give_up_s=0.2)
    assert not elsewhere.exists() and out.is_symlink()


def test_a_folder_named_like_an_image_gets_an_error_row_as_in_predict(tmp_path: Path) -> None:
    """Passed over in silence it would look like a lost image; walked with --recursive it is a folder."""
    root = tmp_path / "session"
    _cells(root, 1)
    (root / "dir.bmp").mkdir()
    write_cell(root / "dir.bmp" / "inner.bmp", 120)
    out = tmp_path / "p.csv"
    watch_folder(root, classifier=_classifier(), out=out, interval=0.02, max_idle=0.5, give_up_s=0.2)
    rows = {r["path"]: r for r in _rows(out)}
    assert sorted(rows) == ["1.bmp", "dir.bmp"]
    assert rows["dir.bmp"]["status"] == "error" and "is a directory" in rows["dir.bmp"]["error"]
    deep = tmp_path / "deep.csv"
    watch_folder(root, classifier=_classifier(), out=deep, interval=0.02, max_idle=0.5, recursive=True,
                 give_up_s=0.2)
    assert sorted(r["path"] for r in _rows(deep)) == ["1.bmp", "dir.bmp/inner.bmp"]


def test_a_file_that_changes_while_it_is_read_waits_and_gets_one_row(tmp_path: Path) -> None:
    """A writer that pauses longer than a poll: the read is not final until the file is stable again."""
    folder = tmp_path / "in"
    _cells(folder, 1)
    path = folder / "1.bmp"
    tracker = ArrivalTracker()
    assert tracker.poll([path]) == [] and tracker.poll([path]) == [path]  # two identical polls: ready
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))  # the writer touched it while it was read
    assert tracker.accept(path, failed=False) is False  # no row yet
    assert tracker.poll([path]) == [] and tracker.poll([path]) == [path]
    assert tracker.accept(path, failed=False) is True
    tracker.poll([path])
    assert tracker.poll([path]) == []  # done once, not "overwritten" later


def test_a_good_read_of_a_file_deleted_since_still_counts(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _cells(folder, 1)
    path = folder / "1.bmp"
    tracker = ArrivalTracker()
    tracker.poll([path])
    assert tracker.poll([path]) == [path]
    path.unlink()
    assert tracker.accept(path, failed=False) is True
