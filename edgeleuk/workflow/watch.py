"""``edgeleuk watch``: classify cell images as the microscope writes them into a folder.

Each new image gets one row in a CSV with the same columns as ``edgeleuk
predict`` (plus ``true_label``, filled when the file name carries the class, as
C-NMC names do), written and fsync'ed before the next image: a crash loses
nothing already classified, and a restart reads the CSV and skips every file in
it. Each row names the model, threshold, TTA mode and engine that made the call,
and when; a restart with another model or threshold is refused unless asked to
go on, and the change is then recorded in the provenance sidecar
(:mod:`edgeleuk.workflow.provenance`). A file is read only once its size and mtime have stayed the same across two
polls; one that still fails to decode is retried, and one overwritten under the
same name after it was classified is classified again (a new row; see
:mod:`edgeleuk.workflow.arrivals`). Bad files become error rows, as in
``predict``. Ctrl-C stops cleanly with a summary.

An engine fault (out of memory, a device lost, a model swapped mid-session) is
not a bad file: it writes no row; the same files are tried again after a pause
that doubles each time (:class:`FaultPolicy`), and after ``retries`` failures in
a row the session stops with exit 1. A row that cannot be written (disk full,
folder turned read-only) also stops it with exit 1; the CSV keeps every row
written before and nothing half-written. A restart continues where it stopped.

Why polling rather than file-system events: microscope PCs often write to
network shares (SMB/NFS) where inotify/ReadDirectoryChangesW events are missing
or late, an event only says a file was touched (we still have to wait until it
is complete, which is what polling measures), and a listing of one folder every
half second costs nothing next to a network forward pass. It also keeps the
runtime free of extra dependencies (``watchdog``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgeleuk.core.errors import EngineFault, OutputError, UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.core.text import printable
from edgeleuk.io.csvcells import text_to_name
from edgeleuk.io.data import label_from_name, subject_from_name
from edgeleuk.runtime.classifier import Classifier, Prediction
from edgeleuk.workflow.arrivals import ArrivalTracker, FolderScanner
from edgeleuk.workflow.csvlog import CsvLog
from edgeleuk.workflow.fieldrows import FIELD_COLUMNS, FieldLedger, FieldOptions, FieldRunner, resume_ledger
from edgeleuk.workflow.flags import DEFAULT_QC, FLAGGED, check_qc_mode, checks_for, judge, pre_qc_header
from edgeleuk.workflow.outputs import DEFAULT_OUT, ResultRow, columns
from edgeleuk.workflow.provenance import (
    Provenance,
    RunStamp,
    continue_output,
    legacy_header,
    sidecar_path,
    utc_now,
    write_record,
)

log = logging.getLogger(__name__)

COLUMNS = columns(with_truth=True)


@dataclass(frozen=True)
class FaultPolicy:
    """How ``watch`` rides out engine faults: retry with exponential backoff, then stop.

    Attributes:
        retries: Failed attempts in a row tolerated; the next one stops the session (exit 1).
        backoff_s: Pause after the first fault; it doubles after each further one.
        max_backoff_s: Longest pause between attempts.
    """

    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise UsageError(f"fault retries and backoff must not be negative, got {self}")

    def delay(self, faults: int) -> float:
        """Seconds to wait after the ``faults``-th fault in a row (1, 2, 4... capped)."""
        return min(self.backoff_s * 2.0 ** (faults - 1), self.max_backoff_s)


@dataclass
class WatchSummary:
    """What one ``watch`` session did.

    Attributes:
        folder: The watched folder.
        out: The CSV appended to.
        resumed: Rows already in the CSV when the session started (not classified again).
        classified: Images classified in this session.
        called_all: Of those, called ALL.
        failed: Files recorded as errors in this session.
        flagged: Cells flagged by the quality or distribution checks (labelled under ``--qc flag``,
            withheld under ``--qc strict``).
        withheld: Of those, calls withheld by ``--qc strict`` (rows with ``status=flagged``, no label).
        stopped: Why the session ended.
        seconds: Wall time of the session.
        tta_note: How staged TTA went (share of cells that went on to stage 2); empty for full TTA.
        model: Which model made this session's calls, and where that is recorded (empty before it starts).
        fields: With ``--fields``: what the fields held (lines of :meth:`FieldLedger.describe`).
    """

    folder: Path
    out: Path
    resumed: int = 0
    classified: int = 0
    called_all: int = 0
    failed: int = 0
    flagged: int = 0
    withheld: int = 0
    stopped: str = ""
    seconds: float = 0.0
    tta_note: str = ""
    model: str = ""
    fields: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.classified + self.withheld + self.failed

    def describe(self) -> str:
        """What was classified, what failed and where the rows are."""
        share = f" ({100 * self.called_all / self.classified:.1f}%)" if self.classified else ""
        unit, bad = ("white cell(s)", "field(s) without cells") if self.fields else ("image(s)", "unreadable file(s)")
        lines = [
            f"watch {self.folder} stopped: {self.stopped} after {self.seconds:.0f} s",
            f"  classified {self.classified} {unit}, {self.called_all} called ALL{share}; "
            + f"{self.failed} {bad} recorded as errors",
            *([f"  flagged {self.flagged} cell(s) (see the qc column)"
               + (f", {self.withheld} of them without a label (--qc strict)" if self.withheld else "")]
              if self.flagged else []),
            f"  {self.out}: {self.resumed + self.written} row(s) ({self.resumed} from earlier sessions); "
            + "run `edgeleuk watch` again to continue",
        ]
        extra = [f"  {note}" for note in (self.model, self.tta_note) if note]
        return "\n".join(lines + self.fields + extra)


def _csv_row(
    folder: Path, path: Path, prediction: Prediction, meta: ModelMeta, stamp: RunStamp, qc: str = DEFAULT_QC
) -> dict[str, str]:
    """One output row, formatted exactly as ``predict`` writes its CSV (``prediction`` judged under ``qc``)."""
    subject = prediction.subject or subject_from_name(path.name)
    label = label_from_name(path)  # C-NMC training names state their class
    truth = None if label is None else meta.label_name(bool(label))
    rel = path.relative_to(folder).as_posix()
    return ResultRow(rel, prediction, subject, truth, stamp, utc_now(), qc_mode=qc).as_csv(with_truth=True)


@dataclass
class _Session:
    """The state one watch loop works on."""

    folder: Path
    classifier: Classifier
    sink: CsvLog
    tracker: ArrivalTracker
    summary: WatchSummary
    scanner: FolderScanner
    batch: int
    faults: FaultPolicy
    stamp: RunStamp
    qc: str = DEFAULT_QC
    fields: FieldRunner | None = None
    ledger: FieldLedger | None = None


def _record(session: _Session, path: Path, prediction: Prediction) -> None:
    prediction = judge(prediction, session.qc)
    row = _csv_row(session.folder, path, prediction, session.classifier.meta, session.stamp, session.qc)
    _append(session, row, prediction)


def _append(session: _Session, row: dict[str, str], prediction: Prediction) -> None:
    session.sink.append(row)
    s = session.summary
    s.flagged += prediction.flagged and prediction.status != "error"
    if prediction.status == FLAGGED:
        s.withheld += 1
        log.warning("%s: flagged (%s), no label (p=%.3f)", printable(row["path"]), row["qc"], prediction.prob_all)
    elif prediction.status == "ok":
        s.classified += 1
        s.called_all += prediction.label == session.classifier.meta.label_name(True)
        log.info("%s: %s (p=%.3f)", printable(row["path"]), row["label"].upper(), prediction.prob_all)
    else:
        s.failed += 1
        log.warning("%s: not classified: %s", printable(row["path"]), printable(prediction.error))


def _link_out(path: Path) -> Prediction:
    """The error row of a file link leading out of the watched folder (its target is never read)."""
    return Prediction(path=str(path), status="error", error=(
        "refused: a link leading out of the watched folder; watch reads only files inside it "
        "(copy the file in instead)"
    ))


def _process_fields(
    session: _Session, runner: FieldRunner, ready: list[Path], max_files: int | None, stop: threading.Event
) -> str | None:
    """Each ready field whole: its rows, then its record (a restart does a field without one again)."""
    assert session.ledger is not None
    for path in ready:
        rel = path.relative_to(session.folder).as_posix()
        subject, label = subject_from_name(path.name), label_from_name(path)
        if session.scanner.leads_out(path):
            outcome = runner.error(rel, path, str(_link_out(path).error), subject=subject)
        else:  # an EngineFault propagates: no row for this field, the next poll tries it again
            truth = None if label is None else session.classifier.meta.label_name(bool(label))
            outcome = runner.run(path, rel, subject, truth)
        if not session.tracker.accept(path, failed=outcome.unreadable):
            continue  # still being written or retried: it comes back on a later poll
        for row in outcome.rows:
            _append(session, row.as_csv(with_truth=True), row.prediction)
        session.ledger.add(rel, outcome)
        session.ledger.write()
        if max_files is not None and session.summary.written >= max_files:
            return f"{max_files} row(s) done"
        if stop.is_set():
            return "stop requested"
    return None


def _process(
    session: _Session, ready: list[Path], max_files: int | None, stop: threading.Event
) -> str | None:
    """Classify ready files in small batches; says why to stop, if it is time to."""
    if session.fields is not None:
        return _process_fields(session, session.fields, ready, max_files, stop)
    for start in range(0, len(ready), session.batch):
        chunk = ready[start : start + session.batch]
        inside = [p for p in chunk if not session.scanner.leads_out(p)]
        refused = ((p, _link_out(p)) for p in chunk if p not in inside)
        # iter_predict, not predict_paths: rows made before an engine fault are recorded.
        predicted = zip(inside, session.classifier.iter_predict(inside), strict=True)
        for path, prediction in itertools.chain(refused, predicted):
            if not session.tracker.accept(path, failed=prediction.status != "ok"):
                continue  # still being written or retried: it comes back on a later poll
            _record(session, path, prediction)
            if max_files is not None and session.summary.written >= max_files:
                return f"{max_files} file(s) done"
        if stop.is_set():
            return "stop requested"
    return None


def _after_fault(session: _Session, fault: EngineFault, faults: int, stop: threading.Event) -> None:
    """Wait before trying the same files again, or give up after the policy's bound (exit 1)."""
    policy = session.faults
    if faults > policy.retries:
        raise EngineFault(
            f"giving up after {faults} engine fault(s) in a row, the last: {fault}. No row was written "
            "for the files it failed on; check the engine (memory, device, model file) and run watch "
            "again: it continues where it stopped"
        ) from fault
    delay = policy.delay(faults)
    log.warning(
        "engine fault %d of %d tolerated in a row: %s; trying again in %.3g s",
        faults,
        policy.retries,
        fault,
        delay,
    )
    stop.wait(delay)


def _loop(
    session: _Session, interval: float, stop: threading.Event, max_files: int | None, max_idle: float | None
) -> str:
    """Poll until stopped; returns why it stopped."""
    last_activity = time.monotonic()
    faults = 0
    while not stop.is_set():
        ready = session.tracker.poll(session.scanner.list())
        if ready:
            written = session.summary.written
            try:
                reason = _process(session, ready, max_files, stop)
            except EngineFault as fault:
                # "In a row" counts attempts that got nothing done: progress starts the count again.
                faults = 1 if session.summary.written > written else faults + 1
                _after_fault(session, fault, faults, stop)
                last_activity = time.monotonic()
                continue  # the files it failed on are still ready: the next poll tries them again
            faults = 0
            if reason:
                return reason
            last_activity = time.monotonic()
        elif session.tracker.waiting:
            last_activity = time.monotonic()  # a file is still being written: not idle
        elif max_idle is not None and time.monotonic() - last_activity >= max_idle:
            return f"no new files for {max_idle:g} s"
        stop.wait(interval)
    return "stop requested"


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[list[int]]:
    """Turn the first Ctrl-C into ``stop.set()``, so the loop ends between rows.

    A KeyboardInterrupt could land between writing a row and counting it; the
    event is checked only at safe points. A second Ctrl-C interrupts at once
    (a stuck engine). Yields a list that gets one item per Ctrl-C handled.
    Signal handlers can only be installed from the main thread; elsewhere
    (tests, embedding) this does nothing.
    """
    presses: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield presses
        return

    def on_sigint(signum: int, frame: object) -> None:
        presses.append(signum)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, previous)


def _open_classifier(model: Path | None, backend: str, tta: str = "full", qc: str = DEFAULT_QC) -> Classifier:
    if model is None:
        raise UsageError("give --model (an exported .onnx or .xml)")
    return Classifier.load(model, backend=backend, tta=tta, **checks_for(qc))


def _start_session(
    folder: Path,
    classifier: Classifier,
    sink: CsvLog,
    summary: WatchSummary,
    recursive: bool,
    batch: int,
    give_up_s: float,
    faults: FaultPolicy,
    stamp: RunStamp,
    qc: str = DEFAULT_QC,
) -> _Session:
    """Pick up where an earlier session's CSV left off and say what runs."""
    if sink.trimmed_bytes:
        log.warning(
            "%s ended in a torn row (a crash mid-write); it was dropped and will be redone", sink.path
        )
    summary.resumed = len(sink.rows)
    tracker = ArrivalTracker(done=dict.fromkeys(_resumed_keys(folder, sink.rows)), give_up_s=give_up_s)
    log.info(
        "watching %s with model %s on %s, threshold %.4g (%s); %d file(s) already in %s; Ctrl-C stops",
        folder,
        stamp.model,
        stamp.engine,
        classifier.threshold,
        classifier.threshold_source,
        summary.resumed,
        sink.path,
    )
    scanner = FolderScanner(folder, recursive)
    return _Session(folder, classifier, sink, tracker, summary, scanner, max(1, batch), faults, stamp, qc)


def _open_output(
    out: Path, run: Provenance, continue_with_new_model: bool, columns: tuple[str, ...] = COLUMNS
) -> tuple[CsvLog, dict]:
    """The CSV log for ``out`` and the provenance sidecar to write once it is open; nothing is written here.

    Raises:
        UsageError: ``out`` is not ours, is an older file without provenance (or qc) columns, or was
            written by another model or threshold (without ``continue_with_new_model``).
    """
    sink = CsvLog(out, columns, explain=lambda h: legacy_header(h, columns) or pre_qc_header(h, columns))
    return sink, continue_output(out, sink.read_rows(), run, continue_with_new_model, utc_now())


def _write_sidecar(out: Path, record: dict) -> None:
    """Record the session's model beside ``out`` before its first row (exit 2 when that cannot be written)."""
    try:
        write_record(out, record)
    except OSError as exc:
        raise UsageError(
            f"cannot write {sidecar_path(out)}: {exc.strerror or exc} (free space, or choose another --out)"
        ) from exc


def _resumed_keys(folder: Path, rows: list[dict[str, str]]) -> set[str]:
    """The files an earlier session recorded, by their exact names (see :mod:`edgeleuk.io.csvcells`)."""
    return {ArrivalTracker.key(folder / text_to_name(r["path"])) for r in rows if r.get("path")}


def watch_folder(
    folder: Path,
    model: Path | None = None,
    out: Path = DEFAULT_OUT,
    backend: str = "auto",
    interval: float = 0.5,
    *,
    recursive: bool = False,
    classifier: Classifier | None = None,
    stop_event: threading.Event | None = None,
    max_files: int | None = None,
    max_idle: float | None = None,
    batch: int = 8,
    give_up_s: float = 10.0,
    tta: str = "full",
    faults: FaultPolicy | None = None,
    continue_with_new_model: bool = False,
    qc: str = DEFAULT_QC,
    fields: FieldOptions | None = None,
) -> WatchSummary:
    """Classify images as they appear in ``folder`` until stopped.

    Args:
        folder: Folder the microscope writes into.
        model: Exported ``.onnx``/``.xml`` model (uses its threshold); ignored when ``classifier`` is given.
        out: CSV to append to; rows already in it are not classified again.
        backend: Inference backend for ``model``.
        interval: Seconds between folder polls.
        recursive: Also watch sub-folders.
        classifier: An already loaded :class:`edgeleuk.runtime.classifier.Classifier`.
        stop_event: Set it (from another thread) to stop after the current batch.
        max_files: Stop after writing this many rows (tests, batch jobs).
        max_idle: Stop after this many seconds without new files (tests, batch jobs).
        batch: Most files per engine call.
        give_up_s: Seconds an unchanged file may keep failing to decode (a writer that
            paused mid-file) before it is recorded as an error row.
        tta: ``full`` or ``staged`` rotation TTA for ``model`` (see :mod:`edgeleuk.runtime.staged`).
        faults: Retry and backoff for engine faults (default :class:`FaultPolicy`).
        continue_with_new_model: Add rows to an ``out`` whose rows were made by another model or
            threshold, recording the change in its provenance sidecar; without it that is refused.
        qc: ``flag``, ``strict`` or ``off``: what a flagged cell's row says (:mod:`edgeleuk.workflow.flags`);
            with ``off`` and no ``classifier``, the model is opened without quality checks.
        fields: The files are smear fields: one row per white cell (:mod:`edgeleuk.workflow.fieldrows`),
            a field's rows written together and then recorded in ``<out>.fields.json``; a restart
            cuts the rows of a field that was not recorded and does it again whole.

    Returns:
        The session summary; Ctrl-C ends the session normally.

    Raises:
        UsageError: The folder or model is missing, or ``out`` is not a predictions CSV
            this command can write: other columns, an older file without provenance columns, or
            rows of another model or threshold without ``continue_with_new_model`` (exit 2, before
            any work; nothing is written).
        EngineFault: The engine kept failing past ``faults.retries`` (exit 1); no error rows.
        OutputError: A row could not be written (disk full, read-only) (exit 1); every
            row written before is kept.
    """
    folder = Path(os.path.abspath(folder))  # absolute paths double as the tracker's keys
    if not folder.is_dir():
        raise UsageError(
            f"watch folder not found: {folder} (create it, or point at the microscope's output folder)"
        )
    if interval <= 0:
        raise UsageError(f"interval must be positive, got {interval}")
    check_qc_mode(qc)
    classifier = classifier or _open_classifier(model, backend, tta, qc)
    run = Provenance.of(classifier, model, classifier.tta)
    s = run.stamp
    summary = WatchSummary(folder=folder, out=Path(out), model=(
        f"model {s.model} ({run.file}) on {s.engine}, threshold {s.threshold:.4g}, {s.tta} TTA; "
        f"provenance in {sidecar_path(Path(out))}"))
    started = time.monotonic()
    runner = None if fields is None else FieldRunner(classifier, fields, s, qc)  # no model scale: exit 2 now
    if fields is not None:
        fields.check_folders(watched=folder, recursive=recursive)
    log_file, record = _open_output(Path(out), run, continue_with_new_model,
                                    COLUMNS if fields is None else FIELD_COLUMNS + COLUMNS)
    ledger = None if fields is None else resume_ledger(Path(out), len(log_file.read_rows()))
    with log_file as sink:
        _write_sidecar(Path(out), record)
        session = _start_session(
            folder, classifier, sink, summary, recursive, batch, give_up_s, faults or FaultPolicy(), run.stamp, qc
        )
        session.fields, session.ledger = runner, ledger
        stop = stop_event or threading.Event()
        with _ctrl_c_sets(stop) as presses:
            try:
                summary.stopped = _loop(session, interval, stop, max_files, max_idle)
            except KeyboardInterrupt:
                summary.stopped = "interrupted (Ctrl-C twice)"
            except (EngineFault, OutputError) as exc:
                summary.stopped, summary.seconds = "failed", time.monotonic() - started
                summary.tta_note = classifier.tta_note
                raise type(exc)(f"{exc}\n{summary.describe()}") from exc
            if presses and summary.stopped == "stop requested":
                summary.stopped = "interrupted (Ctrl-C)"
    summary.seconds, summary.tta_note = time.monotonic() - started, classifier.tta_note
    summary.fields = ledger.describe() if ledger is not None else []
    return summary
