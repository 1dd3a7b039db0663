"""``watch``'s promises, model-free: exact bounds on retries, batches and files, Ctrl-C in process, refusals.

A stub engine (:class:`runtime_support.FlakyBackend`) stands in for ONNX Runtime; a stop event that
records its waits shows the pauses ``watch`` takes without timing anything.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from runtime_support import FlakyBackend
from workflow_support import write_cell

from edgeleuk.core.errors import EngineFault, UsageError
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.wire import model_id, model_sha256
from edgeleuk.workflow import watch as watch_module
from edgeleuk.workflow.provenance import PROVENANCE_COLUMNS, sidecar_path
from edgeleuk.workflow.watch import FaultPolicy, watch_folder

GREYS = [40, 120, 170, 230]
STUB_ID = model_id(model_sha256(Path(FlakyBackend.model_path)))


class _Waits(threading.Event):
    """A stop event that records each pause asked for and takes a hundredth of it (at most 10 ms).

    After ``cap`` pauses it sets itself, so a session that would never end stops ("stop requested")
    and the test fails instead of hanging; ``then`` runs after each pause (a file changing meanwhile).
    """

    def __init__(self, cap: int = 2000, then=None) -> None:
        super().__init__()
        self.asked: list[float | None] = []
        self.cap, self.then = cap, then

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(timeout)
        if len(self.asked) >= self.cap:
            self.set()
        if timeout is not None:
            super().wait(min(timeout, 1.0) / 100)
        if self.then is not None:
            self.then(len(self.asked))
        return self.is_set()


def _cells(folder: Path, n: int = 4) -> list[str]:
    return [write_cell(folder / f"{k + 1}.bmp", GREYS[k % 4]).name for k in range(n)]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _classifier(backend: FlakyBackend | None = None) -> Classifier:
    return Classifier(backend or FlakyBackend(), batch_size=8, workers=1)


@pytest.mark.parametrize("field", ["retries", "backoff_s", "max_backoff_s"])
def test_a_negative_fault_policy_is_refused(field: str) -> None:
    values = {"retries": 5, "backoff_s": 1.0, "max_backoff_s": 60.0} | {field: -1}
    with pytest.raises(UsageError) as refused:
        FaultPolicy(**values)
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    assert str(refused.value) == f"fault retries and backoff must not be negative, got FaultPolicy({shown})"


def test_a_zero_fault_policy_stops_at_the_first_fault_without_waiting(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 2)
    assert FaultPolicy(0, 0.0, 0.0).delay(3) == 0.0
    stop = _Waits()
    with pytest.raises(EngineFault, match="giving up after 1 engine fault"):
        watch_folder(folder, classifier=_classifier(FlakyBackend(lambda call: True)), out=out, interval=0.01,
                     stop_event=stop, max_idle=30, faults=FaultPolicy(0, 0.0, 0.0))
    assert stop.asked == [0.01]  # the first poll's pause only: no wait after the fault


def test_faults_wait_the_doubling_pauses_then_give_up_after_exactly_the_bound(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 2)
    stop = _Waits()
    backend = FlakyBackend(lambda call: True)
    with pytest.raises(EngineFault) as stopped:
        watch_folder(folder, classifier=_classifier(backend), out=out, interval=0.01, stop_event=stop,
                     max_idle=30, faults=FaultPolicy(retries=3, backoff_s=0.25, max_backoff_s=0.75))
    assert backend.calls == 4  # three tolerated, the fourth stops it
    assert [t for t in stop.asked if t != 0.01] == [0.25, 0.5, 0.75]
    text = str(stopped.value)
    assert text.startswith("giving up after 4 engine fault(s) in a row, the last: ")
    assert "out of memory (call 4)" in text
    assert ("No row was written for the files it failed on; check the engine (memory, device, model file) "
            "and run watch again: it continues where it stopped\nwatch ") in text
    assert "stopped: failed after" in text and f"{out}: 0 row(s) (0 from earlier sessions)" in text
    assert _rows(out) == []


def test_batches_bound_each_engine_call(tmp_path: Path) -> None:
    for batch, calls in ((1, 4), (0, 4), (3, 2)):
        folder, out = tmp_path / f"in{batch}", tmp_path / f"p{batch}.csv"
        _cells(folder, 4)
        backend = FlakyBackend()
        summary = watch_folder(folder, classifier=_classifier(backend), out=out, interval=0.01, max_idle=0.3,
                               batch=batch, stop_event=_Waits())
        assert (summary.classified, summary.called_all, backend.calls) == (4, 2, calls), batch  # 170, 230: ALL


def test_max_files_stops_after_exactly_that_many_rows(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 4)
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_idle=30, max_files=3,
                           stop_event=_Waits())
    assert summary.stopped == "3 file(s) done" and len(_rows(out)) == 3 and summary.written == 3
    assert (summary.classified, summary.called_all, summary.failed) == (3, 1, 0)  # grey 170 only is ALL


def test_a_stop_request_ends_the_session_after_the_current_batch(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 4)
    stop = threading.Event()

    class StopsOnFirstCall(FlakyBackend):
        def run(self, batch):
            stop.set()
            return super().run(batch)

    summary = watch_folder(folder, classifier=_classifier(StopsOnFirstCall()), out=out, interval=0.01,
                           stop_event=stop, batch=1)
    assert summary.stopped == "stop requested" and [r["path"] for r in _rows(out)] == ["1.bmp"]


def test_idle_means_no_new_files_for_max_idle(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    folder.mkdir()
    stop = _Waits(cap=1_000_000)  # many quick polls in 0.5 s
    # Idleness runs on the real clock while the pauses are shrunk: 0.5 s leaves room for several polls
    # even on a loaded machine (0.05 s failed when the thread was descheduled after its first poll).
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_idle=0.5, stop_event=stop)
    assert summary.stopped == "no new files for 0.5 s" and summary.written == 0
    assert len(stop.asked) > 1 and set(stop.asked) == {0.01}  # it polled, at its interval, until idle


def test_a_file_deleted_before_it_settles_is_not_waited_for(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    (cell,) = _cells(folder, 1)
    stop = _Waits(then=lambda polls: polls == 1 and (folder / cell).unlink())  # a microscope's temporary file
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_idle=0.05, stop_event=stop)
    assert summary.stopped == "no new files for 0.05 s" and _rows(out) == []


def test_an_unreadable_file_is_retried_while_young_and_the_others_go_on(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 2)
    (folder / "0.bmp").write_bytes(b"BM not a bitmap")  # listed first
    stop = _Waits(cap=60)
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, give_up_s=3600,
                           stop_event=stop)
    assert summary.stopped == "stop requested"
    assert [(r["path"], r["status"]) for r in _rows(out)] == [("1.bmp", "ok"), ("2.bmp", "ok")]
    # Written off at once when the grace is 0: one error row, and the session goes on.
    again = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, give_up_s=0, max_files=1,
                         stop_event=_Waits())
    assert again.stopped == "1 file(s) done" and again.failed == 1
    assert [(r["path"], r["status"]) for r in _rows(out)][-1] == ("0.bmp", "error")


def test_progress_restarts_the_count_of_faults_in_a_row(tmp_path: Path) -> None:
    """A fault after a clean poll is the first in a row again: retries=1 tolerates it."""
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)

    class AddsAFile(FlakyBackend):
        def run(self, batch):
            if self.calls == 0:
                write_cell(folder / "2.bmp", GREYS[1])  # arrives while the first is classified
            return super().run(batch)

    backend = AddsAFile(lambda call: call == 2)
    summary = watch_folder(folder, classifier=_classifier(backend), out=out, interval=0.01, max_files=2,
                           stop_event=_Waits(), faults=FaultPolicy(retries=1, backoff_s=0.01, max_backoff_s=0.01))
    assert summary.stopped == "2 file(s) done" and backend.calls == 3
    assert [r["path"] for r in _rows(out)] == ["1.bmp", "2.bmp"]


def test_the_session_says_which_model_runs_and_where_that_is_recorded(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_idle=0.2)
    assert summary.model == (f"model {STUB_ID} (stub-model.onnx) on flaky-fp32, threshold 0.5, full TTA; "
                             f"provenance in {sidecar_path(out)}")
    (row,) = _rows(out)
    assert (row["path"], row["model"], row["threshold"], row["tta"], row["engine"]) == (
        "1.bmp", STUB_ID, "0.500000", "full", "flaky-fp32")
    assert summary.folder == folder and summary.out == out and summary.seconds > 0


def test_arguments_are_checked_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)
    with pytest.raises(UsageError) as refused:
        watch_folder(tmp_path / "nope", classifier=_classifier(), out=out)
    assert str(refused.value) == (f"watch folder not found: {tmp_path / 'nope'} (create it, or point at the "
                                  "microscope's output folder)")
    for interval in (0, -1):
        with pytest.raises(UsageError) as refused:
            watch_folder(folder, classifier=_classifier(), out=out, interval=interval)
        assert str(refused.value) == f"interval must be positive, got {interval}"
    with pytest.raises(UsageError) as refused:
        watch_folder(folder, out=out)
    assert str(refused.value) == "give --model (an exported .onnx or .xml)"
    assert not out.exists()
    seen = {}

    def load(model, backend, tta):
        seen.update(model=model, backend=backend, tta=tta)
        return _classifier()

    monkeypatch.setattr(Classifier, "load", staticmethod(load))
    watch_folder(folder, model=tmp_path / "m.onnx", backend="cpu", tta="staged", out=out, interval=0.01,
                 max_idle=0.2)
    assert seen == {"model": tmp_path / "m.onnx", "backend": "cpu", "tta": "staged"}


def test_a_sidecar_that_cannot_be_written_refuses_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)

    def full(path, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(watch_module, "write_record", full)
    backend = FlakyBackend()
    with pytest.raises(UsageError) as refused:
        watch_folder(folder, classifier=_classifier(backend), out=out, interval=0.01, max_idle=0.2)
    assert str(refused.value) == (f"cannot write {sidecar_path(out)}: No space left on device (free space, or "
                                  "choose another --out)")
    assert backend.calls == 0 and out.read_text(encoding="utf-8").count("\n") == 1  # the header only


def _press_ctrl_c(times: int, after: threading.Event) -> threading.Thread:
    """Press Ctrl-C ``times`` times once ``after`` is set.

    Each press after the first waits until the first has been handled (watch then restores the
    default handler), as a person's second press does.
    """
    main = threading.main_thread().ident
    assert main is not None

    def press() -> None:
        after.wait(30)
        for k in range(times):
            deadline = time.monotonic() + 30
            while k and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # To the main thread: a process-wide signal may land on another thread and go unseen
            # while the main thread is blocked in a wait.
            signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=press)
    thread.start()
    return thread


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread")
def test_ctrl_c_in_process_stops_between_rows_and_restores_the_handler(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 4)
    before = signal.getsignal(signal.SIGINT)
    first_call = threading.Event()

    class Signals(FlakyBackend):
        def run(self, batch):
            first_call.set()
            return super().run(batch)

    presser = _press_ctrl_c(1, first_call)
    try:
        summary = watch_folder(folder, classifier=_classifier(Signals()), out=out, interval=0.01, batch=1)
    finally:
        presser.join()
    assert summary.stopped == "interrupted (Ctrl-C)"
    assert len(_rows(out)) == summary.written >= 1  # every row written is counted
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread")
def test_a_second_ctrl_c_interrupts_a_stuck_engine(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 2)
    before = signal.getsignal(signal.SIGINT)
    stuck, stop, release = threading.Event(), threading.Event(), threading.Event()

    class Stuck(FlakyBackend):
        def run(self, batch):
            stuck.set()
            # An engine that does not answer until the test ends (or 30 s). Short waits: a signal that lands just
            # before a blocking call is only handled when the call returns (CPython checks between
            # calls), and one long wait made the first press wait for it (seen under load).
            give_up = time.monotonic() + 30  # a broken second Ctrl-C fails the test instead of hanging it
            while not release.wait(0.05) and time.monotonic() < give_up:
                pass
            return super().run(batch)

    presser = _press_ctrl_c(2, stuck)
    try:
        summary = watch_folder(folder, classifier=_classifier(Stuck()), out=out, interval=0.01, stop_event=stop)
    finally:
        stop.set()
        release.set()
        presser.join()
    assert summary.stopped == "interrupted (Ctrl-C twice)" and _rows(out) == []
    assert signal.getsignal(signal.SIGINT) is before


def test_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Half-second polls, the top folder only, 8 files a call, 10 s grace, auto backend, full TTA."""
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 9)
    write_cell(folder / "sub" / "10.bmp", GREYS[0])
    graces: list[float] = []
    real_tracker = watch_module.ArrivalTracker

    def tracker(*args, **kwargs):
        graces.append(kwargs["give_up_s"])
        return real_tracker(*args, **kwargs)

    monkeypatch.setattr(watch_module, "ArrivalTracker", tracker)
    seen = {}
    backend = FlakyBackend()

    def load(model, backend_name, tta):
        seen.update(model=model, backend=backend_name, tta=tta)
        return Classifier(backend, batch_size=16, workers=1)

    monkeypatch.setattr(Classifier, "load", lambda model, backend, tta: load(model, backend, tta))
    stop = _Waits()
    summary = watch_folder(folder, tmp_path / "m.onnx", out, max_idle=0.2, stop_event=stop)
    assert seen == {"model": tmp_path / "m.onnx", "backend": "auto", "tta": "full"}
    assert graces == [10.0] and set(stop.asked) == {0.5}
    assert summary.classified == 9 and backend.calls == 2  # 8 + 1: the session's batch, not the engine's 16
    assert "sub/10.bmp" not in {r["path"] for r in _rows(out)}
    assert FaultPolicy() == FaultPolicy(retries=5, backoff_s=1.0, max_backoff_s=60.0)


def test_the_default_fault_policy_pauses_1_2_4_8_16_s_then_gives_up(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)
    stop = _Waits()
    with pytest.raises(EngineFault, match="giving up after 6 engine fault"):
        watch_folder(folder, classifier=_classifier(FlakyBackend(lambda call: True)), out=out, interval=0.01,
                     stop_event=stop)
    assert [t for t in stop.asked if t != 0.01] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert FaultPolicy(retries=9).delay(7) == 60.0  # the cap


def test_rows_say_which_model_made_each_call_and_the_sidecar_records_it(tmp_path: Path) -> None:
    class Unnamed(FlakyBackend):
        model_path = None  # the classifier does not say which file it opened: the model argument does

    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)
    write_cell(folder / "UID_H4_2_1_hem.bmp", GREYS[3])
    summary = watch_folder(folder, Path(FlakyBackend.model_path), out, classifier=_classifier(Unnamed()),
                           interval=0.01, max_files=2, stop_event=_Waits())
    rows = {r["path"]: r for r in _rows(out)}
    assert (rows["1.bmp"]["subject"], rows["1.bmp"]["true_label"]) == ("", "")
    assert (rows["UID_H4_2_1_hem.bmp"]["subject"], rows["UID_H4_2_1_hem.bmp"]["true_label"]) == ("H4", "hem")
    for row in rows.values():
        assert (row["model"], row["threshold"], row["tta"], row["engine"]) == (STUB_ID, "0.500000", "full",
                                                                                "flaky-fp32")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["time_utc"])
    assert "(stub-model.onnx)" in summary.model
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert list(record["models"]) == [STUB_ID] and record["output"] == "p.csv"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["models"][STUB_ID]["first_seen_utc"])


def test_a_link_out_gets_one_exact_error_row_with_what_its_name_says(tmp_path: Path) -> None:
    root, out = tmp_path / "session", tmp_path / "p.csv"
    secret = write_cell(tmp_path / "secret" / "private.bmp", 200)
    root.mkdir()
    (root / "UID_9_1_1_all.bmp").symlink_to(secret)
    summary = watch_folder(root, classifier=_classifier(), out=out, interval=0.01, give_up_s=0, max_files=1,
                           stop_event=_Waits())
    (row,) = _rows(out)
    assert (row["path"], row["status"], row["prob_all"], row["subject"], row["true_label"]) == (
        "UID_9_1_1_all.bmp", "error", "", "9", "all")
    assert row["error"] == ("refused: a link leading out of the watched folder; watch reads only files inside it "
                            "(copy the file in instead)")
    assert (summary.classified, summary.failed) == (0, 1)


def test_an_older_predictions_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)
    older = [c for c in watch_module.COLUMNS if c not in PROVENANCE_COLUMNS]
    out.write_text(",".join(older) + "\n", encoding="utf-8")
    with pytest.raises(UsageError) as refused:
        watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, stop_event=_Waits())
    assert str(refused.value).startswith(f"{out} cannot be continued: it was written before edgeleuk recorded "
                                         "which model made each call")
    assert out.read_text(encoding="utf-8") == ",".join(older) + "\n"


def test_another_threshold_is_refused_unless_asked_to_go_on(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 2)
    watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_files=1, stop_event=_Waits())
    stricter = Classifier(FlakyBackend(), threshold=0.7, batch_size=8, workers=1)
    with pytest.raises(UsageError, match="was written by"):
        watch_folder(folder, classifier=stricter, out=out, interval=0.01, stop_event=_Waits())
    assert len(_rows(out)) == 1
    again = watch_folder(folder, classifier=stricter, out=out, interval=0.01, max_files=1, stop_event=_Waits(),
                         continue_with_new_model=True)
    assert again.classified == 1 and [r["threshold"] for r in _rows(out)] == ["0.500000", "0.700000"]


def test_a_name_with_a_carriage_return_is_not_classified_again_on_restart(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    write_cell(folder / "c\rd.bmp", GREYS[1])
    write_cell(folder / "e.bmp", GREYS[2])
    first = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_files=2, stop_event=_Waits())
    again = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_idle=0.1, stop_event=_Waits())
    assert (first.classified, again.resumed, again.classified) == (2, 2, 0)
    assert sorted(r["path"] for r in _rows(out)) == ["c\rd.bmp", "e.bmp"]


class _Noted(Classifier):
    """A classifier that reports how staged TTA went, as a staged one does."""

    tta_note = "staged TTA: 1 of 2 cells went on to all 8 rotations"


def test_the_tta_note_is_in_the_summary_whether_the_session_ends_or_fails(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _cells(folder, 1)
    ok = watch_folder(folder, classifier=_Noted(FlakyBackend(), workers=1), out=tmp_path / "a.csv", interval=0.01,
                      max_files=1, stop_event=_Waits())
    assert ok.tta_note == _Noted.tta_note and ok.describe().endswith("\n  " + _Noted.tta_note)
    failing = _Noted(FlakyBackend(lambda call: True), workers=1)
    with pytest.raises(EngineFault) as stopped:
        watch_folder(folder, classifier=failing, out=tmp_path / "b.csv", interval=0.01, stop_event=_Waits(),
                     faults=FaultPolicy(0, 0.0, 0.0))
    assert str(stopped.value).endswith("\n  " + _Noted.tta_note)


def test_each_unreadable_file_is_counted_once(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 1)
    for name in ("x.bmp", "y.bmp"):
        (folder / name).write_bytes(b"BM not a bitmap")
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, give_up_s=0, max_files=3,
                           stop_event=_Waits())
    assert (summary.classified, summary.failed, summary.written) == (1, 2, 3)
    assert [r["status"] for r in _rows(out)] == ["ok", "error", "error"]


def test_the_summary_counts_cells_of_fields_and_flagged_and_withheld_calls() -> None:
    from edgeleuk.workflow.watch import WatchSummary

    common = {"folder": Path("in"), "out": Path("p.csv"), "resumed": 2, "classified": 4, "called_all": 1,
              "failed": 1, "stopped": "stop requested", "seconds": 3.0}
    fields = WatchSummary(**common, flagged=2, withheld=1, fields=["  3 field(s), 4 white cell(s)"])
    assert fields.describe() == (
        "watch in stopped: stop requested after 3 s\n"
        "  classified 4 white cell(s), 1 called ALL (25.0%); 1 field(s) without cells recorded as errors\n"
        "  flagged 2 cell(s) (see the qc column), 1 of them without a label (--qc strict)\n"
        "  p.csv: 8 row(s) (2 from earlier sessions); run `edgeleuk watch` again to continue\n"
        "  3 field(s), 4 white cell(s)")
    cells = WatchSummary(**common, flagged=2).describe().splitlines()
    assert cells[1:3] == ["  classified 4 image(s), 1 called ALL (25.0%); 1 unreadable file(s) recorded as errors",
                          "  flagged 2 cell(s) (see the qc column)"]
    assert len(WatchSummary(**common).describe().splitlines()) == 3  # no flagged line when none was



@pytest.mark.parametrize(("qc", "asked"), [("off", {"qc": False}), ("flag", {}), ("strict", {})])
def test_the_qc_mode_decides_whether_the_model_is_opened_with_quality_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qc: str, asked: dict
) -> None:
    """``--qc off`` opens the model without its checks; the other modes keep the loader's default (on)."""
    folder = tmp_path / "in"
    folder.mkdir()
    seen: list[dict] = []

    def load(model, **kwargs):
        seen.append(kwargs)
        return _classifier()

    monkeypatch.setattr(Classifier, "load", load)
    watch_folder(folder, tmp_path / "m.onnx", tmp_path / "p.csv", backend="cpu", max_idle=0.01, qc=qc,
                 stop_event=_Waits())
    assert seen == [{"backend": "cpu", "tta": "full", **asked}]


class _FlagsSecond(Classifier):
    """The quality checks flag ``2.bmp`` and ``4.bmp`` (blur) and nothing else."""

    def iter_predict(self, paths):
        import dataclasses

        for p in super().iter_predict(paths):
            yield dataclasses.replace(p, qc=("blur",)) if str(p.path).endswith(("2.bmp", "4.bmp")) else p


@pytest.mark.parametrize(("qc", "second", "counts"), [
    # qc: 2.bmp's and 4.bmp's (status, has a label, qc cell); (classified, flagged, withheld, failed)
    ("flag", ("ok", True, "blur"), (4, 2, 0, 1)),
    ("strict", ("flagged", False, "blur"), (2, 2, 2, 1)),
    ("off", ("ok", True, ""), (4, 0, 0, 1)),
])
def test_watch_judges_each_row_under_the_qc_mode_and_counts_what_it_flagged(
        tmp_path: Path, qc: str, second: tuple, counts: tuple) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 4)
    (folder / "5.bmp").write_bytes(b"not an image")  # an error row: never counted as flagged
    clf = _FlagsSecond(FlakyBackend(), batch_size=8, workers=1, qc=False)  # only the stand-in flags
    summary = watch_folder(folder, classifier=clf, out=out, interval=0.01, give_up_s=0, max_files=5, qc=qc,
                           stop_event=_Waits())
    rows = {r["path"]: r for r in _rows(out)}
    assert (rows["2.bmp"]["status"], rows["2.bmp"]["label"] != "", rows["2.bmp"]["qc"]) == second
    passed = "" if qc == "off" else "ok"  # checks off: the qc cell stays empty
    assert {rows[n]["qc"] for n in ("1.bmp", "3.bmp")} == {passed}
    assert (rows["4.bmp"]["status"], rows["4.bmp"]["label"] != "", rows["4.bmp"]["qc"]) == second
    assert (rows["5.bmp"]["status"], rows["5.bmp"]["qc"]) == ("error", "")
    assert (summary.classified, summary.flagged, summary.withheld, summary.failed) == counts



def test_the_session_time_is_its_wall_time_whether_it_ends_or_fails(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _cells(folder, 2)
    started = time.monotonic()
    summary = watch_folder(folder, classifier=_classifier(), out=tmp_path / "p.csv", interval=0.01, max_files=2,
                           stop_event=_Waits())
    assert 0 <= summary.seconds <= time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(EngineFault) as caught:
        watch_folder(folder, classifier=_classifier(FlakyBackend(lambda call: True)), out=tmp_path / "q.csv",
                     interval=0.01, faults=FaultPolicy(retries=0, backoff_s=0.0, max_backoff_s=0.0),
                     stop_event=_Waits())
    took = time.monotonic() - started
    seconds = int(re.search(r"stopped: failed after (\d+) s", str(caught.value)).group(1))
    assert 0 <= seconds <= took + 1


def test_a_fault_on_a_file_deleted_before_the_retry_still_ends_on_idle(tmp_path: Path) -> None:
    """The engine fails on the only file, which is gone by the retry: watch idles out, as after any activity."""
    folder = tmp_path / "in"
    (name,) = _cells(folder, 1)

    backend = FlakyBackend(lambda call: call == 1)

    def delete_after_the_fault_pause(pauses: int) -> None:
        if backend.calls == 1 and (folder / name).exists():  # the pause after the fault
            (folder / name).unlink()

    summary = watch_folder(folder, classifier=_classifier(backend), out=tmp_path / "p.csv", interval=0.01,
                           max_idle=0.05, faults=FaultPolicy(retries=3, backoff_s=0.0, max_backoff_s=0.0),
                           stop_event=_Waits(then=delete_after_the_fault_pause))
    assert summary.stopped == "no new files for 0.05 s" and backend.calls == 1 and summary.written == 0
