"""``watch``'s promises, model-free: exact bounds on retries, batches and files, Ctrl-C in process, refusals.

A stub engine (:class:`runtime_support.FlakyBackend`) stands in for ONNX Runtime; a stop event that
records its waits shows the pauses ``watch`` takes without timing anything.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import threading
from pathlib import Path

import pytest
from runtime_support import FlakyBackend
from workflow_support import write_cell

from edgeleuk.core.errors import EngineFault, UsageError
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.wire import model_id, model_sha256
from edgeleuk.workflow import watch as watch_module
from edgeleuk.workflow.provenance import sidecar_path
from edgeleuk.workflow.watch import FaultPolicy, watch_folder

GREYS = [40, 120, 170, 230]
STUB_ID = model_id(model_sha256(Path(FlakyBackend.model_path)))


class _Waits(threading.Event):
    """A stop event that records how long each wait asked for (and waits a hundredth of it)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(timeout)
        return super().wait(None if timeout is None else min(timeout, 1.0) / 100)


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
                               batch=batch)
        assert (summary.classified, backend.calls) == (4, calls), batch


def test_max_files_stops_after_exactly_that_many_rows(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 4)
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_idle=30, max_files=3)
    assert summary.stopped == "3 file(s) done" and len(_rows(out)) == 3 and summary.written == 3


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
    summary = watch_folder(folder, classifier=_classifier(), out=out, interval=0.01, max_idle=0.05)
    assert summary.stopped == "no new files for 0.05 s" and summary.written == 0


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


def _press_ctrl_c(times: int, after: threading.Event, between: threading.Event | None = None) -> threading.Thread:
    def press() -> None:
        after.wait(30)
        for k in range(times):
            if k and between is not None:
                between.wait(30)
            os.kill(os.getpid(), signal.SIGINT)

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
    stuck, stop = threading.Event(), threading.Event()

    class Stuck(FlakyBackend):
        def run(self, batch):
            stuck.set()
            threading.Event().wait(30)  # an engine that never answers (interruptible, as a C call is not)
            return super().run(batch)

    presser = _press_ctrl_c(2, stuck, between=stop)  # the second once the first is handled
    try:
        summary = watch_folder(folder, classifier=_classifier(Stuck()), out=out, interval=0.01, stop_event=stop)
    finally:
        stop.set()
        presser.join()
    assert summary.stopped == "interrupted (Ctrl-C twice)" and _rows(out) == []
    assert signal.getsignal(signal.SIGINT) is before
