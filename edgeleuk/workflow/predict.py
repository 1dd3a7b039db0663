"""``edgeleuk predict``: classify image files, folders and patterns, one output row per file, and say how it went.

Torch-free. The data flow is one pass: the inputs are listed once (:func:`index_inputs`) into
:class:`~edgeleuk.io.data.Record` s (path, and subject and true label where the
C-NMC layout states them: ``UID_..._all.bmp`` names, or numbered files with a
``Patient_ID,new_names,labels`` CSV inside or beside the folder); the records'
files are decoded on worker threads while the engine runs (see
:mod:`edgeleuk.runtime.pipeline`); each record and its prediction become one
:class:`~edgeleuk.workflow.outputs.ResultRow`, written atomically (complete or absent),
and :class:`PredictSummary` reports the run and its exit code. Each row also says which model
(by id), threshold, TTA mode and engine made the call, and when; the provenance sidecar beside the
output describes the model (:mod:`edgeleuk.workflow.provenance`). ``predict`` replaces its output
whole, so rows of two models never share one file.

Bad files become error rows and the run goes on. An engine fault is not a bad
file: the run stops (exit 1) and what was classified before it goes to
``<out>.partial.csv``. An output that cannot be written at the end (disk full,
read-only folder) stops with exit 1 and the rows are rescued to the temporary folder.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgeleuk.core.errors import EngineFault, OutputError, UsageError
from edgeleuk.core.text import printable
from edgeleuk.evaluation.metrics import binary_metrics
from edgeleuk.io.atomic import check_target
from edgeleuk.io.data import Record
from edgeleuk.io.files import synthetic_root
from edgeleuk.runtime.base import BackendInfo
from edgeleuk.runtime.classifier import Classifier, Prediction
from edgeleuk.workflow.flags import DEFAULT_QC, FLAGGED, STRICT_CNMC, check_qc_mode, checks_for, describe_flags, judge
from edgeleuk.workflow.heatmap_out import HeatmapSink
from edgeleuk.workflow.inputs import Inputs, index_inputs
from edgeleuk.workflow.outputs import (
    DEFAULT_OUT,
    SUFFIXES,
    WRITERS,
    ResultRow,
    SubmissionRefused,
    check_cnmc_names,
    refused_csv_path,
    write_csv,
)
from edgeleuk.workflow.provenance import Provenance, new_record, sidecar_path, utc_now, write_record

log = logging.getLogger(__name__)

MAX_LISTED_ERRORS = 10


@dataclass(frozen=True)
class PredictOptions:
    """How to run ``predict``.

    Attributes:
        backend: ``auto`` or a registered backend name.
        batch: Images per engine call; None picks the default for the model's precision.
        threads: Engine threads; None keeps the backend's default.
        threshold: Decision threshold; None uses the model's metadata.
        recursive: Descend into sub-folders.
        fmt: ``csv``, ``jsonl`` or ``cnmc`` (challenge submission zip).
        engine: Backend name -> that backend's own options record (e.g. ``{"openvino":
            OpenVINOOptions(precision="bf16")}``); backends not named run with their defaults.
        workers: Decoder threads; None picks a default.
        progress: Show a progress bar on stderr.
        tta: ``full`` (every rotation) or ``staged`` (early exit; see :mod:`edgeleuk.runtime.staged`).
        qc: ``flag``, ``strict`` or ``off``: what a flagged cell's row says (:mod:`edgeleuk.workflow.flags`).
        heatmaps: Folder for heatmap overlays (:mod:`edgeleuk.workflow.heatmap_out`); None writes none.
    """

    backend: str = "auto"
    batch: int | None = None  # None: the model's default (runtime.classifier.DEFAULT_BATCH), under 1 GB
    threads: int | None = None
    threshold: float | None = None
    recursive: bool = False
    fmt: str = "csv"
    engine: Mapping[str, Any] = field(default_factory=dict)
    workers: int | None = None
    progress: bool = True
    tta: str = "full"
    qc: str = DEFAULT_QC
    heatmaps: Path | None = None


@dataclass(frozen=True)
class PredictSummary:
    """The outcome of one ``predict`` run.

    Attributes:
        folder: Where the files came from: the folder the rows' paths are relative to
            (:attr:`Inputs.shown`).
        out: File written, or None when the submission was refused (its per-file CSV
            is then written beside it; ``refused`` names it).
        fmt: Output format (csv, jsonl, cnmc).
        rows: One row per input file, in output order.
        backend: What ran, read back from the engine.
        threshold: Decision threshold used.
        threshold_source: Where it came from (model metadata or "override").
        seconds: Wall time of decoding plus inference.
        positive: Class name of ALL (the positive class).
        synthetic: The data came from ``edgeleuk synth`` (figures are SYNTHETIC).
        refused: Why the C-NMC submission was not written (some images failed).
        tta_note: How staged TTA went (empty for full TTA).
        provenance: Which model and engine made the calls (also in every row).
        record: The provenance sidecar written beside the output (see :mod:`edgeleuk.workflow.provenance`).
        qc: The ``--qc`` mode the rows were judged under.
        heatmaps: What the heatmap folder received ("" when none was asked for).
        trust_note: What of the quality checks, OOD score and heatmaps the model could not give, and why.
    """

    folder: Path
    out: Path | None
    fmt: str
    rows: tuple[ResultRow, ...]
    backend: BackendInfo
    threshold: float
    threshold_source: str
    seconds: float
    positive: str = "all"
    synthetic: bool = False
    refused: str | None = None
    tta_note: str = ""
    provenance: Provenance | None = None
    record: Path | None = None
    qc: str = DEFAULT_QC
    heatmaps: str = ""
    trust_note: str = ""

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> int:
        return sum(r.prediction.ok for r in self.rows)

    @property
    def flagged(self) -> int:
        """Calls withheld by ``--qc strict`` (classified, no label; not failures)."""
        return sum(r.prediction.status == FLAGGED for r in self.rows)

    @property
    def failed(self) -> int:
        return self.total - self.ok - self.flagged

    @property
    def n_all(self) -> int:
        return sum(r.prediction.ok and r.prediction.label == self.positive for r in self.rows)

    def exit_code(self, strict: bool = False) -> int:
        """0 if any file was classified (and, with ``strict``, none failed); else 1.

        Also 1 when the output was refused (a C-NMC submission with failed images). A call withheld
        by ``--qc strict`` was classified: flags never change the exit code.
        """
        if self.refused or self.ok + self.flagged == 0:
            return 1
        return 1 if strict and self.failed else 0

    def subject_shares(self) -> dict[str, tuple[int, int]]:
        """Per subject (sorted): ``(classified cells, cells called ALL)``."""
        cells: Counter[str] = Counter()
        called: Counter[str] = Counter()
        for r in self.rows:
            if r.subject is not None and r.prediction.ok:
                cells[r.subject] += 1
                called[r.subject] += r.prediction.label == self.positive
        return {s: (cells[s], called[s]) for s in sorted(cells)}

    def metrics(self) -> dict[str, Any] | None:
        """Metrics against the true labels of the classified cells that have one; None without labels."""
        scored = [r for r in self.rows if r.prediction.ok and r.true_label is not None]
        if not scored:
            return None
        y_true = [int(r.true_label == self.positive) for r in scored]
        return binary_metrics(y_true, [r.prediction.prob_all for r in scored], threshold=self.threshold)

    def _head(self) -> list[str]:
        b = self.backend
        rate = self.total / self.seconds if self.seconds > 0 else float("inf")
        lines = ["SYNTHETIC data: these numbers only show that the pipeline works."] if self.synthetic else []
        lines += [
            (
                f"classified {self.total} file(s) from {self.folder} in {self.seconds:.1f} s ({rate:.1f}/s) "
                f"on {b.name} [{', '.join(b.providers)}, {b.precision}]"
            ),
            f"  ok {self.ok}, failed {self.failed}" + (f", flagged {self.flagged}" if self.flagged else ""),
        ]
        if self.ok:
            n_all = self.n_all
            lines.append(
                f"  ALL {n_all} ({n_all / self.ok:.1%}), HEM {self.ok - n_all} ({1 - n_all / self.ok:.1%}) "
                f"at threshold {self.threshold:.4g} ({self.threshold_source})"
            )
        if self.tta_note:
            lines.append(f"  {self.tta_note}")
        lines += describe_flags([(r.shown, r.prediction) for r in self.rows], self.qc)
        if self.trust_note:
            lines.append(f"  checks: {self.trust_note}")
        if self.heatmaps:
            lines.append(f"  {self.heatmaps}")
        return lines

    def _errors(self) -> list[str]:
        bad = [r for r in self.rows if r.prediction.status == "error"]
        if not bad:
            return []
        lines = ["  failed files:"]
        lines += [f"    {printable(r.shown)}: {printable(r.prediction.error)}" for r in bad[:MAX_LISTED_ERRORS]]
        if len(bad) > MAX_LISTED_ERRORS:
            lines.append(f"    ... and {len(bad) - MAX_LISTED_ERRORS} more (see the error column)")
        return lines

    def _subjects(self) -> list[str]:
        shares = self.subject_shares()
        if not shares:
            return []
        lines = [
            "  per subject (share of cells called ALL):",
            f"    {'subject':<10}{'cells':>6}{'ALL':>6}{'share':>8}",
        ]
        lines += [f"    {s:<10}{n:>6}{k:>6}{k / n:>8.1%}" for s, (n, k) in shares.items()]
        return lines

    def _metrics(self) -> list[str]:
        m = self.metrics()
        if m is None:
            return []

        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        tag = " (SYNTHETIC)" if self.synthetic else ""
        return [
            f"  metrics against the true labels{tag}, {m['n']} cells ({m['n_all']} ALL, {m['n_hem']} HEM):",
            (
                f"    accuracy {f(m['accuracy'])}  sensitivity {f(m['sensitivity'])}  specificity "
                f"{f(m['specificity'])}  F1 (weighted) {f(m['f1'])}  AUC {f(m['auc'])}"
            ),
            f"    confusion [[tn, fp], [fn, tp]] = {m['confusion']}",
        ]

    def describe(self) -> str:
        """A human-readable report: counts, ALL/HEM split, failures, subjects, metrics, output."""
        lines = self._head() + self._errors() + self._subjects() + self._metrics()
        if self.refused:
            lines.append(f"SUBMISSION NOT WRITTEN: {self.refused}")
        else:
            lines.append(f"wrote {self.out} ({self.fmt}, {self.total} rows)")
        if self.provenance is not None:
            s = self.provenance.stamp
            where = f"; provenance in {self.record}" if self.record else ""
            lines.append(f"  model {s.model} ({self.provenance.file}) on {s.engine}, {s.tta} TTA{where}")
        return "\n".join(lines)


def output_path(out: Path, fmt: str) -> Path:
    """The default name follows the format (``predictions.jsonl``/``.zip``); an explicit name is kept."""
    out = Path(out)
    if out == DEFAULT_OUT and fmt != "csv":
        out = out.with_suffix(SUFFIXES[fmt])
    return out


def check_writable(out: Path) -> None:
    """Fail before hours of inference, not after, if the output cannot be written."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name")
    check_target(out)  # a link, a device or a FIFO: refused now, not after the inference
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.probe"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc} (choose another --out)") from exc


def _classify(
    clf: Classifier, records: Sequence[Record], show: bool, keep: Callable[[Prediction], Prediction] | None = None,
) -> tuple[list[tuple[Prediction, str]], EngineFault | None]:
    """Predictions for ``records`` in order, each with when it was made (UTC).

    ``keep`` sees each prediction first and returns what is kept (the heatmap writer drops its map).
    On an engine fault: those made before it, and the fault.
    """
    columns = (TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    results: list[tuple[Prediction, str]] = []
    with Progress(*columns, console=Console(stderr=True), disable=not show) as bar:
        task = bar.add_task("predict", total=len(records))
        try:
            for prediction in clf.iter_predict([r.path for r in records]):
                results.append((prediction if keep is None else keep(prediction), utc_now()))
                bar.advance(task)
        except EngineFault as fault:
            return results, fault
    return results, None


def _rows(
    found: Inputs, records: Sequence[Record], results: Sequence[tuple[Prediction, str]], clf: Classifier,
    run: Provenance, qc: str = DEFAULT_QC,
) -> list[ResultRow]:
    if len(results) != len(records):  # the pipeline promises one result per file
        raise RuntimeError(f"{len(records)} files but {len(results)} predictions")
    return [
        ResultRow(found.row_path(rec.path), judge(pred, qc), rec.subject,
                  None if rec.label is None else clf.meta.label_name(bool(rec.label)), run.stamp_for(pred), when,
                  qc_mode=qc)
        for rec, (pred, when) in zip(records, results, strict=True)
    ]


def load_classifier(model: Path, options: PredictOptions) -> Classifier:
    """Open ``model`` as ``options`` ask (also how each cluster worker opens it)."""
    return Classifier.load(
        model,
        options.backend,
        threshold=options.threshold,
        batch_size=options.batch,
        workers=options.workers,
        threads=options.threads,
        engine=dict(options.engine),
        tta=options.tta,
        **checks_for(options.qc, heatmaps=options.heatmaps is not None),
    )


def partial_path(out: Path) -> Path:
    """Where a run stopped by an engine fault leaves the rows it made: ``<out>.partial.csv``."""
    return out.with_name(f"{out.stem}.partial.csv")


def _rescue(out: Path, rows: Sequence[ResultRow], positive: str, exc: OSError) -> str:
    """Save rows that could not go to ``out`` in the temporary folder; says what happened to them."""
    why = f"cannot write {out}: {exc.strerror or exc}; nothing half-written is left there"
    if not rows:
        return why
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rescue = Path(tempfile.gettempdir()) / f"edgeleuk-rescued-{stamp}-{os.getpid()}.csv"
    try:
        write_csv(rescue, rows, positive)
    except OSError as again:
        return f"{why}, and the {len(rows)} result(s) could not be saved in {rescue.parent} either " + (
            f"({again.strerror or again}): free space or choose another --out and run again"
        )
    return f"{why}; the {len(rows)} result(s) were saved to {rescue} instead (free space, then move it)"


def _write_record(written: Path, rows: Sequence[ResultRow], run: Provenance) -> Path:
    """Write the provenance sidecar of a file predict replaced whole (so it replaces any earlier sidecar)."""
    first = rows[0].time_utc if rows and rows[0].time_utc else utc_now()
    engines = sorted({r.stamp.engine for r in rows if r.stamp is not None} or {run.stamp.engine})
    try:
        write_record(written, new_record(written, run, first, engines))
    except OSError as exc:
        raise OutputError(
            f"wrote {written}, but not its provenance record {sidecar_path(written)}: {exc.strerror or exc}; "
            "every row still names its model by id. Free space (or make the folder writable) and run again"
        ) from exc
    return sidecar_path(written)


def write_output(
    out: Path, fmt: str, rows: Sequence[ResultRow], positive: str, run: Provenance
) -> tuple[str | None, Path]:
    """Write the output and its provenance sidecar.

    Returns:
        Why a C-NMC submission was refused (its per-file CSV is written instead; else None),
        and the sidecar written.

    Raises:
        OutputError: The disk is full or the folder became read-only (exit 1); the rows
            are rescued to the temporary folder where possible.
    """
    refused = None
    try:
        WRITERS[fmt](out, rows, positive)
    except SubmissionRefused as exc:
        refused = str(exc)
    except OSError as exc:
        raise OutputError(_rescue(out, rows, positive, exc)) from exc
    return refused, _write_record(refused_csv_path(out) if refused else out, rows, run)


def keep_partial(out: Path, rows: Sequence[ResultRow], positive: str, run: Provenance, head: str,
                 fault: EngineFault) -> Path:
    """Write the rows made before an engine fault to ``<out>.partial.csv`` with their provenance record.

    Raises:
        OutputError: The partial file could not be written (the rows went to a rescue file, named).
    """
    partial = partial_path(out)
    try:
        write_csv(partial, rows, positive)
    except OSError as exc:
        raise OutputError(f"{head}; " + _rescue(partial, rows, positive, exc)) from fault
    _write_record(partial, rows, run)
    return partial


def _stop_on_fault(
    out: Path, fault: EngineFault, rows: Sequence[ResultRow], total: int, positive: str, run: Provenance
) -> None:
    """Keep what was classified before an engine fault, then stop with exit 1."""
    head = f"{fault}; stopped after classifying {len(rows)} of {total} file(s)"
    if not rows:
        raise EngineFault(
            f"{head}; nothing was written. Check the engine (memory, device, model file) and run again"
        )
    partial = keep_partial(out, rows, positive, run, head, fault)
    raise EngineFault(
        f"{head}: their rows are in {partial} ({out} was not written). Check the engine "
        "(memory, device, model file) and run predict again"
    ) from fault


def predict(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Inputs,
    model: Path, out: Path = DEFAULT_OUT, options: PredictOptions | None = None,
    *, classifier: Classifier | None = None,
) -> PredictSummary:
    """Classify every image the inputs name and write one row per file to ``out``.

    Args:
        inputs: A folder of cell images (BMP, PNG, JPEG, TIFF), or image files, folders and
            patterns in any mix (see :func:`index_inputs` for the rules and the rows' paths),
            or their :class:`Inputs` already listed.
        model: Exported ``.onnx`` or OpenVINO ``.xml``.
        out: Output file; the default ``predictions.csv`` becomes ``.jsonl``/``.zip`` for those formats.
            Every row names the model, threshold, TTA mode, engine and time; ``<out>.provenance.json``
            beside it describes the model (see :mod:`edgeleuk.workflow.provenance`).
        options: Backend, batch, threshold, format and the rest.
        classifier: Classifies instead of opening ``model`` here; anything with the
            :class:`Classifier` attributes ``predict`` reads (``meta``, ``threshold``,
            ``threshold_source``, ``info``, ``iter_predict``, ``tta_note``), e.g. the Ray cluster's
            (:class:`edgeleuk.cluster.predict.ClusterClassifier`).

    Returns:
        The summary; ``exit_code(strict)`` is 0 when any file was classified, 1 when
        none was, when ``strict`` and any failed, or when a C-NMC submission was refused.

    Raises:
        UsageError: Missing model, an input that matches nothing, a missing or empty folder, unknown format, names
            unfit for ``cnmc``, an unwritable output (exit code 2).
        BackendUnavailable: The requested backend cannot run here (exit code 2).
        EngineFault: The engine failed mid-run (exit code 1); rows made before it are in
            :func:`partial_path`, never an error row for a file that was not at fault.
        OutputError: ``out`` could not be written at the end (exit code 1); see :func:`_rescue`.
    """
    options = options or PredictOptions()
    if options.fmt not in WRITERS:
        raise UsageError(f"unknown format {options.fmt!r}; choose one of {', '.join(WRITERS)}")
    check_qc_mode(options.qc)
    if options.fmt == "cnmc" and options.qc == "strict":
        raise UsageError(STRICT_CNMC)
    found = inputs if isinstance(inputs, Inputs) else index_inputs(inputs, options.recursive)
    records = found.records
    if options.fmt == "cnmc":
        check_cnmc_names([r.path.name for r in records])
    out = output_path(out, options.fmt)
    check_writable(out)
    clf = classifier or load_classifier(model, options)
    run = Provenance.of(clf, model, options.tta)
    log.info("classifying %d file(s) from %s on %s", len(records), found.shown, clf.info.name)
    sink = None if options.heatmaps is None else HeatmapSink(options.heatmaps, clf, found.row_path)
    started = time.perf_counter()
    results, fault = _classify(clf, records, options.progress, sink)
    seconds = time.perf_counter() - started
    positive = clf.meta.label_name(True)
    if fault is not None:
        done = records[: len(results)]
        _stop_on_fault(out, fault, _rows(found, done, results, clf, run, options.qc), len(records), positive, run)
    rows = _rows(found, records, results, clf, run, options.qc)
    refused, record = write_output(out, options.fmt, rows, positive, run)
    return PredictSummary(
        folder=found.shown,
        out=None if refused else out,
        fmt=options.fmt,
        rows=tuple(rows),
        backend=clf.info,
        threshold=clf.threshold,
        threshold_source=clf.threshold_source,
        seconds=seconds,
        positive=positive,
        synthetic=synthetic_root(found.base) is not None,
        refused=refused,
        tta_note=clf.tta_note,
        provenance=run,
        record=record,
        qc=options.qc,
        heatmaps="" if sink is None else sink.close(),
        trust_note=str(getattr(clf, "trust_note", "") or ""),
    )
