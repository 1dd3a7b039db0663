"""``watch --fields``: a field's rows go together; a restart after a crash mid-field does it again whole, once.

SYNTHETIC fields, the brightness test model and a fake segmentation (tests/field_support.py).
A crash is an exception no handler catches (like a kill): what is on disk is what a restart finds.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from field_support import BUSY, ONE, write_field

from edgeleuk.core.errors import EngineFault, UsageError
from edgeleuk.workflow import csvlog, fieldrows
from edgeleuk.workflow.fieldrows import FIELD_COLUMNS, FieldOptions, fields_path
from edgeleuk.workflow.watch import COLUMNS, FaultPolicy, watch_folder

OPTIONS = FieldOptions(model_um_per_px=0.25)
#: Rows the folder gives: a_busy 2 cells, b_empty 1 error row, c_one 1 cell, d_busy 2 cells.
EXPECTED = [("a_busy.png", "1"), ("a_busy.png", "2"), ("b_empty.png", ""), ("c_one.bmp", "1"),
            ("d_busy.png", "1"), ("d_busy.png", "2")]


class Crash(BaseException):
    """The process dies here (nothing catches it)."""
# Every field is segmented by the fake that takes each drawn square for a cell (tests/workflow/conftest.py).
pytestmark = pytest.mark.usefixtures("squares_are_cells")


@pytest.fixture
def smear(tmp_path: Path) -> Path:
    folder = tmp_path / "smear"
    write_field(folder / "a_busy.png", BUSY)
    write_field(folder / "b_empty.png", [])
    write_field(folder / "c_one.bmp", ONE)
    write_field(folder / "d_busy.png", BUSY)
    return folder


def _watch(folder: Path, out: Path, bright_model: Path, **kw):
    return watch_folder(folder, model=bright_model, out=out, backend="cpu", interval=0.05, max_idle=0.6,
                        give_up_s=0.2, fields=OPTIONS, **kw)


def _keys(out: Path) -> list[tuple[str, str]]:
    with open(out, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == FIELD_COLUMNS + COLUMNS
        return [(r["field"], r["cell"]) for r in reader]


def test_rows_per_cell_and_a_restart_adds_nothing(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.csv"
    first = _watch(smear, out, bright_model)
    assert _keys(out) == EXPECTED
    assert (first.classified, first.failed) == (5, 1)
    assert any("not classified: 2 edge cut, 2 platelet" in line for line in first.fields)
    again = _watch(smear, out, bright_model)
    assert _keys(out) == EXPECTED and again.resumed == 6 and again.written == 0
    assert json.loads(fields_path(out).read_text())["rows"] == 6


@pytest.mark.parametrize("crash_at", [2, 6])  # inside the first field; inside the last, after finished ones
def test_a_crash_mid_field_redoes_that_field_whole(
    bright_model: Path, smear: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    crash_at: int,
) -> None:
    out = tmp_path / "w.csv"
    real, count = csvlog.CsvLog.append, [0]

    def dying(self, row):
        count[0] += 1
        if count[0] == crash_at:
            raise Crash
        real(self, row)

    with monkeypatch.context() as m:
        m.setattr(csvlog.CsvLog, "append", dying)
        with pytest.raises(Crash):
            _watch(smear, out, bright_model)
    assert len(_keys(out)) == crash_at - 1  # the rows before the crash are on disk, the field's too
    with caplog.at_level(logging.WARNING):
        _watch(smear, out, bright_model)
    assert _keys(out) == EXPECTED  # each row once, the interrupted field complete
    assert "done again whole" in caplog.text


def test_a_crash_before_the_field_is_recorded_redoes_it(
    bright_model: Path, smear: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "w.csv"
    real, count = fieldrows.FieldLedger.write, [0]

    def dying(self):
        count[0] += 1
        if count[0] == 5:  # the start, a, b, c recorded; d_busy's two rows are written, its record is not
            raise Crash
        real(self)

    with monkeypatch.context() as m:
        m.setattr(fieldrows.FieldLedger, "write", dying)
        with pytest.raises(Crash):
            _watch(smear, out, bright_model)
    assert _keys(out) == EXPECTED
    _watch(smear, out, bright_model)
    assert _keys(out) == EXPECTED
    assert Counter(_keys(out)).most_common(1)[0][1] == 1
    doc = json.loads(fields_path(out).read_text())
    assert doc["rows"] == 6 and doc["fields"]["d_busy.png"]["cells"] == 2


def test_an_engine_fault_writes_no_row_and_the_field_is_tried_again(
    bright_model: Path, smear: Path, tmp_path: Path
) -> None:
    from edgeleuk.runtime.classifier import Classifier

    clf = Classifier.load(bright_model, backend="cpu")
    calls = [0]
    real = clf.predict_arrays

    def flaky(images):
        calls[0] += 1
        if calls[0] == 2:
            raise EngineFault("device lost")
        return real(images)

    clf.predict_arrays = flaky  # type: ignore[method-assign]
    out = tmp_path / "w.csv"
    _watch(smear, out, bright_model, classifier=clf, faults=FaultPolicy(retries=2, backoff_s=0.0))
    assert _keys(out) == EXPECTED


def test_crops_and_overlays_must_not_land_in_the_watched_folder(
    bright_model: Path, smear: Path, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="watched folder"):
        watch_folder(smear, model=bright_model, out=tmp_path / "w.csv", backend="cpu", max_idle=0.1,
                     fields=FieldOptions(model_um_per_px=0.25, overlays=smear))
    with pytest.raises(UsageError, match="watched folder"):
        watch_folder(smear, model=bright_model, out=tmp_path / "w.csv", backend="cpu", max_idle=0.1,
                     recursive=True, fields=FieldOptions(model_um_per_px=0.25, save_crops=smear / "crops"))
    assert not (tmp_path / "w.csv").exists()


def test_a_field_still_being_written_waits_instead_of_an_error_row(
    bright_model: Path, tmp_path: Path
) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "w.csv"
    data = write_field(tmp_path / "whole.png", ONE).read_bytes()
    folder.mkdir()
    (folder / "slow.png").write_bytes(data[: len(data) // 2])  # the camera paused mid-file
    from edgeleuk.runtime.classifier import Classifier

    clf, stop = Classifier.load(bright_model, backend="cpu"), threading.Event()
    worker = threading.Thread(target=lambda: watch_folder(
        folder, model=bright_model, out=out, classifier=clf, interval=0.05, give_up_s=30.0, fields=OPTIONS,
        stop_event=stop))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not fields_path(out).exists():  # the session has started
            time.sleep(0.02)
        time.sleep(0.8)  # many polls read the half file and fail
        (folder / "slow.png").write_bytes(data)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_keys(out) if out.exists() else []) < 1:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(60)
    assert _keys(out) == [("slow.png", "1")]


def test_a_link_out_of_the_folder_is_one_error_row_and_never_read(bright_model: Path, tmp_path: Path) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "w.csv"
    outside = write_field(tmp_path / "elsewhere" / "secret.png", ONE)
    write_field(folder / "a.png", ONE)
    (folder / "b.png").symlink_to(outside)
    _watch(folder, out, bright_model)
    assert _keys(out) == [("a.png", "1"), ("b.png", "")]
    with open(out, newline="", encoding="utf-8") as fh:
        error = [r["error"] for r in csv.DictReader(fh) if r["field"] == "b.png"][0]
    assert "link leading out of the watched folder" in error


def test_cli_watch_field_flags_need_fields(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    result = CliRunner().invoke(app, ["watch", str(smear), "-m", str(bright_model), "--um-per-px", "0.2",
                                      "--out", str(tmp_path / "w.csv")])
    assert result.exit_code == 2 and "only apply with --fields" in result.output
    result = CliRunner().invoke(app, ["watch", str(smear), "-m", str(bright_model), "--fields", "--out",
                                      str(tmp_path / "w.csv")])
    assert result.exit_code == 2 and "--model-um-per-px" in result.output  # the test model states no scale
    assert not (tmp_path / "w.csv").exists()


KILLER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from field_support import fake_find_cells
from edgeleuk.workflow import csvlog, fieldrows
from edgeleuk.workflow.fieldrows import FieldOptions
from edgeleuk.workflow.watch import watch_folder

fieldrows.fieldlib.find_cells = fake_find_cells
real, count = csvlog.CsvLog.append, [0]

def append(self, row):
    real(self, row)
    count[0] += 1
    if count[0] == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: power cut

csvlog.CsvLog.append = append
watch_folder(Path({folder!r}), model=Path({model!r}), out=Path({out!r}), backend="cpu", interval=0.05,
             max_idle=5.0, fields=FieldOptions(model_um_per_px=0.25))
"""


def test_a_process_killed_mid_field_resumes_without_lost_or_doubled_rows(
    bright_model: Path, smear: Path, tmp_path: Path
) -> None:
    out = tmp_path / "w.csv"
    script = KILLER.format(tests=str(Path(__file__).parents[1]), kill_after=5, folder=str(smear),
                           model=str(bright_model), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _keys(out) == EXPECTED[:5]  # d_busy's first cell is on disk, its second is not
    assert json.loads(fields_path(out).read_text())["rows"] == 4
    _watch(smear, out, bright_model)
    assert _keys(out) == EXPECTED


def test_keep_rows_counts_records_not_lines(tmp_path: Path) -> None:
    """A name with a line break is one record: the cut must not land inside it."""
    path = tmp_path / "log.csv"
    with csvlog.CsvLog(path, ["path", "cell"]) as sink:
        for name, cell in (("a\nb.png", "1"), ("a\nb.png", "2"), ("c.png", "1"), ('d"\n".png', "1")):
            sink.append({"path": name, "cell": cell})
    whole = path.read_bytes()
    for n in (4, 5, 9):  # nothing past the mark (5: more rows asked for than the file holds)
        assert csvlog.keep_rows(path, n) == 0 and path.read_bytes() == whole
    dropped = csvlog.keep_rows(path, 2)
    assert dropped == len(whole) - len(path.read_bytes()) == len(b'c.png,1\n"d""\n"".png",1\n')
    rows = csvlog.CsvLog(path, ["path", "cell"]).read_rows()
    assert [(r["path"], r["cell"]) for r in rows] == [("a\nb.png", "1"), ("a\nb.png", "2")]
    assert path.read_bytes().endswith(b"\n")


def test_keep_rows_ends_a_record_at_a_line_break_right_after_a_closing_quote(tmp_path: Path) -> None:
    """A line break right after a closing quote (`"x"` then the break) opens the next piece of text."""
    path = tmp_path / "log.csv"
    path.write_bytes(b'path,cell\n"a,b",1\n"c",2\n"d"\n"e"\n')
    assert csvlog.keep_rows(path, 3) == len(b'"e"\n')
    assert path.read_bytes() == b'path,cell\n"a,b",1\n"c",2\n"d"\n'
    assert csvlog.keep_rows(path, 1) == len(b'"c",2\n"d"\n')
    assert path.read_bytes() == b'path,cell\n"a,b",1\n'


def test_keep_rows_leaves_a_torn_row_past_the_rows_kept_to_the_log(tmp_path: Path) -> None:
    """Header, n whole rows and a torn one: nothing to cut here (CsvLog trims a torn last row when opened)."""
    path = tmp_path / "log.csv"
    path.write_bytes(b"path,cell\na.png,1\nb.png,2\nc.pn")
    assert csvlog.keep_rows(path, 2) == 0
    assert path.read_bytes() == b"path,cell\na.png,1\nb.png,2\nc.pn"



def _rows(out: Path) -> list[dict[str, str]]:
    with open(out, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class _Polls(threading.Event):
    """A stop event that sets itself after ``cap`` polls, so a session that would wait on stops instead."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap, self.polls = cap, 0

    def wait(self, timeout: float | None = None) -> bool:
        self.polls += 1
        if self.polls >= self.cap:
            self.set()
        return super().wait(0.01)


def test_field_rows_carry_the_subject_and_true_label_their_names_state(bright_model: Path, tmp_path: Path) -> None:
    """C-NMC names state subject and class: every row of the field says both; a plain name says neither."""
    folder, out = tmp_path / "incoming", tmp_path / "w.csv"
    write_field(folder / "UID_11_3_1_all.png", BUSY)
    write_field(folder / "plain.png", ONE)
    outside = write_field(tmp_path / "elsewhere" / "secret.png", ONE)
    (folder / "UID_H10_2_1_hem.png").symlink_to(outside)
    _watch(folder, out, bright_model)
    got = sorted((r["field"], r["cell"], r["status"], r["subject"], r["true_label"]) for r in _rows(out))
    assert got == [
        ("UID_11_3_1_all.png", "1", "ok", "11", "all"),
        ("UID_11_3_1_all.png", "2", "ok", "11", "all"),
        ("UID_H10_2_1_hem.png", "", "error", "H10", ""),  # the link's own name; its target is never read
        ("plain.png", "1", "ok", "", ""),
    ]


def test_a_hem_field_is_labelled_hem_from_its_name(bright_model: Path, tmp_path: Path) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "w.csv"
    write_field(folder / "UID_H10_43_1_hem.png", ONE)
    _watch(folder, out, bright_model)
    assert [(r["subject"], r["true_label"]) for r in _rows(out)] == [("H10", "hem")]


def test_a_field_still_being_written_does_not_hold_up_a_later_ready_field(bright_model: Path, tmp_path: Path) -> None:
    """The half-written field waits for a later poll; the whole one after it is done in the same poll."""
    folder, out = tmp_path / "incoming", tmp_path / "w.csv"
    data = write_field(tmp_path / "whole.png", ONE).read_bytes()
    folder.mkdir()
    (folder / "a_half.png").write_bytes(data[: len(data) // 2])  # listed first, cannot be read yet
    write_field(folder / "b_whole.png", ONE)
    summary = watch_folder(folder, model=bright_model, out=out, backend="cpu", interval=0.01, give_up_s=3600,
                           fields=OPTIONS, max_files=1, stop_event=_Polls(cap=50))
    assert summary.stopped == "1 row(s) done"
    assert _keys(out) == [("b_whole.png", "1")]


def test_max_files_stops_at_the_first_field_that_reaches_it(bright_model: Path, tmp_path: Path) -> None:
    """One row asked for, the first field gives exactly one: the next field is not started."""
    folder, out = tmp_path / "incoming", tmp_path / "w.csv"
    write_field(folder / "a_one.png", ONE)
    write_field(folder / "b_busy.png", BUSY)
    summary = _watch(folder, out, bright_model, max_files=1)
    assert summary.stopped == "1 row(s) done" and summary.written == 1
    assert _keys(out) == [("a_one.png", "1")]


def test_a_stop_request_ends_the_session_after_the_current_field(bright_model: Path, tmp_path: Path) -> None:
    from edgeleuk.runtime.classifier import Classifier

    folder, out = tmp_path / "incoming", tmp_path / "w.csv"
    write_field(folder / "a_busy.png", BUSY)
    write_field(folder / "b_one.png", ONE)
    clf, stop = Classifier.load(bright_model, backend="cpu"), threading.Event()
    real = clf.predict_arrays

    def stopping(images):
        stop.set()  # asked while the first field is classified
        return real(images)

    clf.predict_arrays = stopping  # type: ignore[method-assign]
    summary = _watch(folder, out, bright_model, classifier=clf, stop_event=stop)
    assert summary.stopped == "stop requested"
    assert _keys(out) == [("a_busy.png", "1"), ("a_busy.png", "2")]


def test_field_cells_are_judged_under_the_qc_mode_and_stamped_with_their_model(
        bright_model: Path, smear: Path, tmp_path: Path) -> None:
    from edgeleuk.runtime.wire import model_id, model_sha256

    # The squares are uniform grey: the default quality checks find every one blank.
    expected = {"flag": ("ok", True, "blank"), "strict": ("flagged", False, "blank"), "off": ("ok", True, "")}
    for qc, judged in expected.items():
        out = tmp_path / f"{qc}.csv"
        _watch(smear, out, bright_model, qc=qc)
        cells = [r for r in _rows(out) if r["cell"]]
        assert len(cells) == 5 and {r["model"] for r in cells} == {model_id(model_sha256(bright_model))}
        assert {(r["status"], r["label"] != "", r["qc"]) for r in cells} == {judged}
