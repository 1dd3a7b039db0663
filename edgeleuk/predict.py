"""``edgeleuk predict``: classify every image in a folder, one output row per file.

Torch-free. Files are decoded on worker threads while the engine runs (see
:mod:`edgeleuk.runtime.pipeline`); bad files become error rows and the run goes
on; the output is written atomically (complete or absent). An engine fault is
not a bad file: the run stops (exit 1) and what was classified before it goes to
``<out>.partial.csv``. An output that cannot be written at the end (disk full,
read-only folder) stops with exit 1 and the rows are rescued to the temporary
folder. True labels are
attached when the folder follows the C-NMC layout (``UID_..._all.bmp`` names,
or numbered files with a ``Patient_ID,new_names,labels`` CSV inside or beside).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeleuk.data import Record, discover, label_from_name, list_images, subject_from_name
from edgeleuk.errors import DataError, EngineFault, OutputError, UsageError
from edgeleuk.files import synthetic_root
from edgeleuk.imageio import SUPPORTED_EXTENSIONS
from edgeleuk.outputs import SUFFIXES, WRITERS, ResultRow, SubmissionRefused, check_cnmc_names, write_csv
from edgeleuk.predict_summary import PredictSummary
from edgeleuk.runtime.classifier import Classifier, Prediction

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("predictions.csv")


@dataclass(frozen=True)
class PredictOptions:
    """How to run ``predict``.

    Attributes:
        backend: ``auto`` or a registered backend name.
        batch: Images per engine call.
        threads: Engine threads; None keeps the backend's default.
        threshold: Decision threshold; None uses the model's metadata.
        recursive: Descend into sub-folders.
        fmt: ``csv``, ``jsonl`` or ``cnmc`` (challenge submission zip).
        engine: Backend name -> that backend's own options record (e.g. ``{"openvino":
            OpenVINOOptions(precision="bf16")}``); backends not named run with their defaults.
        workers: Decoder threads; None picks a default.
        progress: Show a progress bar on stderr.
    """

    backend: str = "auto"
    # 4 cells = 32 rotated views per call: the full network with the INT8 IR stays under 1 GB
    # (benchmarks/RESULTS.md), and larger batches do not add throughput on small CPUs.
    batch: int = 4
    threads: int | None = None
    threshold: float | None = None
    recursive: bool = False
    fmt: str = "csv"
    engine: Mapping[str, Any] = field(default_factory=dict)
    workers: int | None = None
    progress: bool = True


def _list_inputs(folder: Path, recursive: bool) -> list[Path]:
    # Files named like images of other formats (.gif...) are listed too: they get an error row.
    paths = list_images(folder, recursive=recursive, unsupported=True)
    if not paths:
        hint = (
            ""
            if recursive or not any(p.is_dir() for p in folder.iterdir())
            else "; add --recursive for sub-folders"
        )
        raise DataError(f"no images in {folder} (looked for {', '.join(SUPPORTED_EXTENSIONS)}){hint}")
    return paths


def _output_path(out: Path, fmt: str) -> Path:
    """The default name follows the format (``predictions.jsonl``/``.zip``); an explicit name is kept."""
    out = Path(out)
    if out == DEFAULT_OUT and fmt != "csv":
        out = out.with_suffix(SUFFIXES[fmt])
    return out


def _check_writable(out: Path) -> None:
    """Fail before hours of inference, not after, if the output cannot be written."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.probe"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc} (choose another --out)") from exc


def _indexed_records(folder: Path, paths: Sequence[Path]) -> dict[str, Record]:
    """Labelled C-NMC records for ``paths``, found by :func:`edgeleuk.data.discover`."""
    roots = [folder]
    if all(p.stem.isdigit() for p in paths):
        roots.append(folder.parent)  # a prelim folder's labels CSV usually sits beside it
    wanted = {os.path.abspath(p) for p in paths}
    for root in roots:
        try:
            index = discover(root)
        except DataError as exc:
            log.warning("true labels not used: %s", exc)
            continue
        found = {
            os.path.abspath(r.path): r
            for split in ("train", "prelim")
            if index.has(split)
            for r in index.split(split)
        }
        found = {k: r for k, r in found.items() if k in wanted}
        if found:
            return found
    return {}


def known_truth(folder: Path, paths: Sequence[Path]) -> dict[Path, tuple[int | None, str | None]]:
    """``path -> (label, subject)`` from the data layout; label 1 = ALL, 0 = HEM, None = unknown."""
    records = _indexed_records(folder, paths)
    truth = {}
    for path in paths:
        rec = records.get(os.path.abspath(path))
        subject = rec.subject if rec and rec.subject else subject_from_name(path.name)
        label = rec.label if rec and rec.label is not None else label_from_name(path)
        truth[path] = (label, subject)
    return truth


def _classify(
    clf: Classifier, paths: Sequence[Path], show: bool
) -> tuple[list[Prediction], EngineFault | None]:
    """Predictions for ``paths`` in order; on an engine fault, those made before it and the fault."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    results: list[Prediction] = []
    with Progress(*columns, console=Console(stderr=True), disable=not show) as bar:
        task = bar.add_task("predict", total=len(paths))
        try:
            for prediction in clf.iter_predict(paths):
                results.append(prediction)
                bar.advance(task)
        except EngineFault as fault:
            return results, fault
    return results, None


def _rows(
    folder: Path, paths: Sequence[Path], predictions: Sequence[Prediction], clf: Classifier
) -> list[ResultRow]:
    if len(predictions) != len(paths):  # the pipeline promises one result per file
        raise RuntimeError(f"{len(paths)} files but {len(predictions)} predictions")
    truth = known_truth(folder, paths)
    rows = []
    for path, pred in zip(paths, predictions, strict=True):
        label, subject = truth[path]
        true_name = None if label is None else clf.meta.label_name(bool(label))
        rows.append(ResultRow(path.relative_to(folder).as_posix(), pred, subject or pred.subject, true_name))
    return rows


def _load_classifier(model: Path, options: PredictOptions) -> Classifier:
    return Classifier.load(
        model,
        options.backend,
        threshold=options.threshold,
        batch_size=options.batch,
        workers=options.workers,
        threads=options.threads,
        engine=dict(options.engine),
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


def _write(out: Path, fmt: str, rows: Sequence[ResultRow], positive: str) -> str | None:
    """Write the output; returns why a C-NMC submission was refused (its CSV is written), else None.

    Raises:
        OutputError: The disk is full or the folder became read-only (exit 1); the rows
            are rescued to the temporary folder where possible.
    """
    try:
        WRITERS[fmt](out, rows, positive)
    except SubmissionRefused as exc:
        return str(exc)
    except OSError as exc:
        raise OutputError(_rescue(out, rows, positive, exc)) from exc
    return None


def _stop_on_fault(
    out: Path, fault: EngineFault, rows: Sequence[ResultRow], total: int, positive: str
) -> None:
    """Keep what was classified before an engine fault, then stop with exit 1."""
    head = f"{fault}; stopped after classifying {len(rows)} of {total} file(s)"
    if not rows:
        raise EngineFault(
            f"{head}; nothing was written. Check the engine (memory, device, model file) and run again"
        )
    partial = partial_path(out)
    try:
        write_csv(partial, rows, positive)
    except OSError as exc:
        raise OutputError(f"{head}; " + _rescue(partial, rows, positive, exc)) from fault
    raise EngineFault(
        f"{head}: their rows are in {partial} ({out} was not written). Check the engine "
        "(memory, device, model file) and run predict again"
    ) from fault


def predict(
    folder: Path, model: Path, out: Path = DEFAULT_OUT, options: PredictOptions | None = None,
    *, classifier: Classifier | None = None,
) -> PredictSummary:
    """Classify every image in ``folder`` and write one row per file to ``out``.

    Args:
        folder: Folder of cell images (BMP, PNG, JPEG, TIFF).
        model: Exported ``.onnx`` or OpenVINO ``.xml``.
        out: Output file; the default ``predictions.csv`` becomes ``.jsonl``/``.zip`` for those formats.
        options: Backend, batch, threshold, format and the rest.
        classifier: Classifies instead of opening ``model`` here; anything with the
            :class:`Classifier` attributes ``predict`` reads (``meta``, ``threshold``,
            ``threshold_source``, ``info``, ``iter_predict``), e.g. the Ray cluster's
            (:class:`edgeleuk.cluster.predict.ClusterClassifier`).

    Returns:
        The summary; ``exit_code(strict)`` is 0 when any file was classified, 1 when
        none was, when ``strict`` and any failed, or when a C-NMC submission was refused.

    Raises:
        UsageError: Missing model, missing or empty folder, unknown format, names
            unfit for ``cnmc``, an unwritable output (exit code 2).
        BackendUnavailable: The requested backend cannot run here (exit code 2).
        EngineFault: The engine failed mid-run (exit code 1); rows made before it are in
            :func:`partial_path`, never an error row for a file that was not at fault.
        OutputError: ``out`` could not be written at the end (exit code 1); see :func:`_rescue`.
    """
    options = options or PredictOptions()
    folder = Path(folder)
    if options.fmt not in WRITERS:
        raise UsageError(f"unknown format {options.fmt!r}; choose one of {', '.join(WRITERS)}")
    paths = _list_inputs(folder, options.recursive)
    if options.fmt == "cnmc":
        check_cnmc_names([p.name for p in paths])
    out = _output_path(out, options.fmt)
    _check_writable(out)
    clf = classifier or _load_classifier(model, options)
    log.info("classifying %d file(s) from %s on %s", len(paths), folder, clf.info.name)
    started = time.perf_counter()
    predictions, fault = _classify(clf, paths, options.progress)
    seconds = time.perf_counter() - started
    positive = clf.meta.label_name(True)
    if fault is not None:
        done = paths[: len(predictions)]
        _stop_on_fault(out, fault, _rows(folder, done, predictions, clf), len(paths), positive)
    rows = _rows(folder, paths, predictions, clf)
    refused = _write(out, options.fmt, rows, positive)
    return PredictSummary(
        folder=folder,
        out=None if refused else out,
        fmt=options.fmt,
        rows=tuple(rows),
        backend=clf.info,
        threshold=clf.threshold,
        threshold_source=clf.threshold_source,
        seconds=seconds,
        positive=positive,
        synthetic=synthetic_root(folder) is not None,
        refused=refused,
    )
