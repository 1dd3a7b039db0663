"""The commands of the deployed side: predict, watch, calibrate, report, info, bench, synth, recipes, profiles."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer

from edgeleuk.cli.base import (
    MODEL_FLAG,
    MODEL_HELP,
    QC_HELP,
    TTA_HELP,
    BackendChoice,
    BenchBackend,
    OutFormat,
    QcMode,
    TTAMode,
    app,
    backend_flags,
    exit_codes,
    is_quiet,
    needs_train,
    one_path,
)
from edgeleuk.cluster import DEFAULT_STALL_S, ClusterOptions
from edgeleuk.core.config import config_text, describe_configs
from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.registry import backend_options
from edgeleuk.runtime.staged import DEFAULT_AGREEMENT, TTA_MODES
from edgeleuk.workflow.flags import QC_MODES, checks_for
from edgeleuk.workflow.outputs import DEFAULT_OUT
from edgeleuk.workflow.predict import PredictOptions
from edgeleuk.workflow.predict import predict as run_predict

FIELDS_HELP = ("Each input is a smear field: find its white cells, cut each to the C-NMC form and classify "
               "it (one row per cell; OUT.fields.json counts what was not classified).")
UM_PER_PX_HELP = ("With --fields: the camera's micrometres per pixel (default: the TIFF resolution tags, else "
                  "estimated from the median red-cell diameter).")
MODEL_UM_HELP = "With --fields: micrometres per pixel of the model's training cells (default: the model's metadata)."
CROPS_HELP = "With --fields: folder to save each classified crop in (PNG; the row's crop column names it)."
OVERLAYS_HELP = "With --fields: folder to write one overlay PNG per field in (numbered outlines coloured by the call)."


def _field_options(fields: bool, um_per_px: float | None, model_um_per_px: float | None,
                   save_crops: Path | None, overlays: Path | None) -> Any:
    """The field options when --fields is given (None otherwise); the field flags alone are a usage error."""
    given = [f for f, v in (("--um-per-px", um_per_px), ("--model-um-per-px", model_um_per_px),
                            ("--save-crops", save_crops), ("--overlays", overlays)) if v is not None]
    if not fields:
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --fields (the inputs are smear fields)")
        return None
    from edgeleuk.workflow.fieldrows import FieldOptions  # lazy: the segmentation libraries only with --fields

    return FieldOptions(um_per_px=um_per_px, model_um_per_px=model_um_per_px, save_crops=save_crops,
                        overlays=overlays)


@app.command()
@backend_flags
def predict(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUTS",
        help="Image files, folders and patterns, in any mix: a.bmp DIR/ 'DIR/*.bmp' ('**' spans folders; "
             "a quoted pattern is expanded by edgeleuk).",
    ),
    model: Path = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
    out: Path = typer.Option(
        DEFAULT_OUT,
        help="File to write, atomically (the default name takes .jsonl/.zip for those formats).",
    ),
    batch: int | None = typer.Option(
        None, min=1,
        help="Images per inference batch (x rotations views per call); default: chosen from the model's "
             "precision to keep predict under 1 GB.",
    ),
    threads: int | None = typer.Option(None, min=1, help="Inference threads (default: backend's)."),
    threshold: float | None = typer.Option(None, help="Decision threshold (default: the model's)."),
    recursive: bool = typer.Option(False, help="Descend into the sub-folders of folder inputs."),
    fmt: OutFormat = typer.Option(OutFormat.csv, "--format", help="csv, jsonl or cnmc (challenge zip)."),
    strict: bool = typer.Option(False, help="Exit 1 if any file failed."),
    tta: TTAMode = typer.Option(TTA_MODES[0], help=TTA_HELP),
    qc: QcMode = typer.Option(QC_MODES[0], help=QC_HELP),
    heatmaps: Path | None = typer.Option(
        None, help="Folder for heatmap overlays (cell and class activation map side by side) of ALL calls, "
                   "flagged cells and cells near the threshold; `report --heatmaps` shows them.",
    ),
    cluster: str | None = typer.Option(
        None, help="Spread the work over Ray: 'auto' (running cluster, else local Ray) or an address."
    ),
    cluster_workers: int | None = typer.Option(
        None, min=1, help="With --cluster: engine workers (default: as many as the nodes hold)."
    ),
    cluster_timeout: float = typer.Option(
        DEFAULT_STALL_S, help="With --cluster: seconds without progress before stopping (exit 1, partial CSV)."
    ),
    fields: bool = typer.Option(False, "--fields", help=FIELDS_HELP),
    um_per_px: float | None = typer.Option(None, "--um-per-px", help=UM_PER_PX_HELP),
    model_um_per_px: float | None = typer.Option(None, "--model-um-per-px", help=MODEL_UM_HELP),
    save_crops: Path | None = typer.Option(None, "--save-crops", help=CROPS_HELP),
    overlays: Path | None = typer.Option(None, "--overlays", help=OVERLAYS_HELP),
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Classify image files, folders and patterns; one output row per input file.

    A folder is listed in natural order (--recursive: sub-folders too); a named
    file is taken as given; a pattern keeps the image files it matches and lists
    the folders. A file named twice is classified once. Row paths are relative to
    the folder when one folder is given, else to the deepest folder holding every
    input (the summary names it: give it to `edgeleuk report --images`).
    Bad files (empty, corrupt, not an image, wrong bit depth) become error rows.
    Other sizes are padded or cropped (never resized) and flagged.
    The output is written atomically: complete or absent.
    --format cnmc writes the challenge zip (isbi_valid.predict, one 0/1 line per
    N.bmp in numeric order); if any image failed it writes nothing and exits 1.
    Every row says whether its cell passed the quality and distribution checks
    (qc, ood_score); --qc strict withholds the label of a flagged cell
    (status=flagged; not with --format cnmc, which needs a call on every line).
    --fields takes smear fields of any size instead of cell crops: one row per
    white cell found (field, cell, bbox, centroid, area_um2, scale_source, crop
    first); a field that cannot be read or holds no white cell is one error row.

    Exit codes: 0 at least one file classified (failures are listed);
    1 none classified, --strict with any failed file, cnmc refused, an engine
    fault (rows made before it go to OUT.partial.csv) or an unwritable OUT;
    2 usage error (missing model, an input that matches nothing, no images,
    backend unavailable).
    """
    with exit_codes():
        engine = backend_options(**(engine_fields or {})).engine
        opts = PredictOptions(
            backend=backend.value, batch=batch, threads=threads, threshold=threshold, recursive=recursive,
            fmt=fmt.value, engine=engine, tta=tta.value, progress=not is_quiet(ctx), qc=qc.value, heatmaps=heatmaps,
        )
        if cluster and heatmaps is not None:
            raise UsageError("--heatmaps is not available with --cluster (the maps stay on the workers); "
                             "run predict without --cluster to write them")
        field_opts = _field_options(fields, um_per_px, model_um_per_px, save_crops, overlays)
        if field_opts is not None:
            if cluster:
                raise UsageError("--fields runs on this machine; drop --cluster")
            if heatmaps is not None:
                raise UsageError("--heatmaps is not available with --fields yet; use --overlays for the "
                                 "fields, or run predict --heatmaps on the crops that --save-crops writes")
            from edgeleuk.workflow.fieldpredict import predict_fields  # lazy: only with --fields

            summary = predict_fields(inputs, model=model, out=out, options=opts, fields=field_opts)
        elif cluster:
            from edgeleuk.cluster.predict import cluster_predict  # lazy: the Ray side (Ray itself loads on connect)

            summary = cluster_predict(inputs, model, out, opts, address=cluster, workers=cluster_workers,
                                      cluster=ClusterOptions(stall_s=cluster_timeout))
        else:
            summary = run_predict(inputs, model=model, out=out, options=opts)
    typer.echo(summary.describe())
    raise typer.Exit(summary.exit_code(strict=strict))


@app.command()
@backend_flags
def watch(
    folder: Path = typer.Argument(..., help="Folder the microscope writes images into."),
    model: Path = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    out: Path = typer.Option(DEFAULT_OUT, help="File (CSV) to append one row per image to."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
    interval: float = typer.Option(0.5, min=0.05, help="Polling interval in seconds."),
    recursive: bool = typer.Option(
        False, help="Also watch sub-folders (links out of the tree are not followed)."
    ),
    fault_retries: int = typer.Option(
        5, min=0, help="Engine faults in a row retried before stopping (exit 1)."
    ),
    fault_backoff: float = typer.Option(
        1.0, min=0.0, help="Seconds to wait after the first engine fault; doubles each time, at most 60."
    ),
    tta: TTAMode = typer.Option(TTA_MODES[0], help=TTA_HELP),
    continue_with_new_model: bool = typer.Option(
        False, "--continue-with-new-model",
        help="Add rows to an OUT written by another model or threshold; the change is recorded in "
             "OUT.provenance.json (without it, that is refused: choose a new --out).",
    ),
    qc: QcMode = typer.Option(QC_MODES[0], help=QC_HELP),
    fields: bool = typer.Option(False, "--fields", help=FIELDS_HELP),
    um_per_px: float | None = typer.Option(None, "--um-per-px", help=UM_PER_PX_HELP),
    model_um_per_px: float | None = typer.Option(None, "--model-um-per-px", help=MODEL_UM_HELP),
    save_crops: Path | None = typer.Option(None, "--save-crops", help=CROPS_HELP),
    overlays: Path | None = typer.Option(None, "--overlays", help=OVERLAYS_HELP),
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Classify images as they arrive; Ctrl-C stops cleanly; a restart resumes.

    A file is read once its size has stopped changing; one row per image is
    appended to OUT and flushed to disk at once, so nothing classified is lost
    in a crash. Files already in OUT are not classified again; one overwritten
    under the same name gets a new row. An engine fault writes no row: the files
    are tried again with backoff, then watch stops (exit 1). A full disk or
    read-only OUT stops it too (exit 1), keeping every row written.
    Each row names the model (id), threshold, TTA mode, engine and time;
    OUT.provenance.json describes each model. A restart with another model or
    threshold exits 2 and writes nothing, unless --continue-with-new-model.
    Rows carry qc and ood_score as in predict; --qc strict withholds the label of
    a flagged cell. An OUT written before those columns existed is refused (exit 2).
    With --fields each image is a smear field: its cells' rows are written
    together, then recorded in OUT.fields.json; a restart does a field that was
    cut short again whole, without doubling its rows.
    """
    from edgeleuk.runtime.classifier import Classifier
    from edgeleuk.workflow.watch import FaultPolicy, watch_folder

    with exit_codes():
        field_opts = _field_options(fields, um_per_px, model_um_per_px, save_crops, overlays)
        # --server etc. reach the backend
        clf = Classifier.load(model, backend.value, tta=tta.value, **checks_for(qc.value), **(engine_fields or {}))
        summary = watch_folder(
            folder, model=model, out=out, backend=backend.value, interval=interval, recursive=recursive,
            faults=FaultPolicy(retries=fault_retries, backoff_s=fault_backoff),
            classifier=clf, continue_with_new_model=continue_with_new_model, qc=qc.value, fields=field_opts,
        )
    typer.echo(summary.describe())


@app.command()
@backend_flags
def calibrate(
    model_arg: Path | None = typer.Argument(
        None, metavar="MODEL", show_default=False, help="Deprecated: use --model/-m."
    ),
    model: Path | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    data: Path = typer.Option(..., help="Labelled validation images (C-NMC layout)."),
    sensitivity: float = typer.Option(0.95, min=0.0, max=1.0, help="Target sensitivity for ALL."),
    keep_threshold: bool = typer.Option(
        False, help="Keep the model's threshold; only choose the staged-TTA stages at it."
    ),
    staged_agreement: float | None = typer.Option(
        None, min=0.0, max=1.0,
        help=f"Staged TTA: least agreement of the cells that stop early with full TTA "
             f"(default {DEFAULT_AGREEMENT:g}).",
    ),
    out: Path = typer.Option(..., help="File: the model to write with the new threshold (same format as --model)."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
    allow_small: bool = typer.Option(
        False, "--allow-small", help="Calibrate on fewer than 30 cells or 5 subjects of a class (said in the output "
        "and stored in the model)."
    ),
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Pick the decision threshold that reaches a target sensitivity with the best specificity.

    The same pass chooses the staged-TTA stages at that threshold (which rotations
    first, and how far from the threshold a cell must be to stop there); the model
    then accepts `--tta staged`. With --backend remote --server URL the cells are
    scored on an `edgeleuk serve` server (threshold only: it computes no single rotations).
    """
    from edgeleuk.workflow.calibrate import calibrate_model

    with exit_codes():
        path = one_path(model, model_arg, MODEL_FLAG, "MODEL")
        point = calibrate_model(path, data=data, sensitivity=None if keep_threshold else sensitivity, out=out,
                                backend=backend.value, staged_agreement=staged_agreement,
                                engine_fields=engine_fields, allow_small=allow_small)
    typer.echo(point.describe())


@app.command()
def report(
    predictions: Path = typer.Argument(..., help="predictions.csv from predict or watch."),
    out: Path = typer.Option(Path("report.html"), help="File to write: the self-contained HTML report."),
    images: Path | None = typer.Option(
        None, help="Folder the CSV's relative paths start from (the folder predict/watch named in its summary); "
        "images are read only below it. Without it the page has no thumbnails (and says so)."
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="The model that made the rows: its model card's summary goes into the page."
    ),
    heatmaps: Path | None = typer.Option(
        None, help="The folder `predict --heatmaps` wrote: each overlay goes next to its cell's thumbnail."
    ),
) -> None:
    """Write a self-contained HTML patient-level report (flagged cells in their own section)."""
    from edgeleuk.workflow.report import write_report

    with exit_codes():
        path = write_report(predictions, out=out, images=images, model=model, heatmaps=heatmaps)
    typer.echo(f"wrote {path}")


@app.command()
def info(
    model_arg: Path | None = typer.Argument(
        None, metavar="MODEL", show_default=False, help="Deprecated: use --model/-m (or --checkpoint)."
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Exported .onnx or OpenVINO .xml (a .pt/.pth is read as a checkpoint)."
    ),
    checkpoint: Path | None = typer.Option(None, help="edgeleuk checkpoint (.pt); needs the training extra."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object: path, kind, format, size_bytes, meta, export."
    ),
) -> None:
    """Print the metadata stored in a model file or checkpoint."""
    from edgeleuk.info import CHECKPOINT_SUFFIXES, describe_model_file, model_file_record

    with exit_codes():
        if checkpoint is not None and (model is not None or model_arg is not None):
            raise UsageError("give one file: --model/-m or --checkpoint")
        path = checkpoint if checkpoint is not None else one_path(model, model_arg, MODEL_FLAG, "MODEL")
        is_ckpt = True if checkpoint is not None else None  # None: decided by the suffix
        torch_needed = checkpoint is not None or path.suffix.lower() in CHECKPOINT_SUFFIXES
        with needs_train("info") if torch_needed else contextlib.nullcontext():
            if as_json:
                text = json.dumps(model_file_record(path, checkpoint=is_ckpt), indent=2, sort_keys=True, default=str)
            else:
                text = describe_model_file(path, checkpoint=is_ckpt)
    typer.echo(text)


@app.command()
@backend_flags
def bench(
    model: Path = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint for the torch reference row."),
    backend: BenchBackend = typer.Option(BenchBackend.all, help="Backend(s) to measure."),
    data: Path | None = typer.Option(None, help="Images (labelled C-NMC layout gives F1)."),
    n: int = typer.Option(32, min=1, help="Number of cells."),
    batch: int = typer.Option(8, min=1, help="Largest batch size tried for throughput."),
    threads: int | None = typer.Option(None, min=1, help="Inference threads."),
    json_out: Path | None = typer.Option(None, "--json", help="File to write the JSON record to."),
    extra_model: list[Path] = typer.Option([], "--extra-model", help="More model files (e.g. INT8 IR)."),
    quick: bool = typer.Option(False, help="Few timed runs: checks the harness, numbers are rough."),
    budget: float = typer.Option(2.0, min=0.1, help="Seconds each timing loop may run (the library default)."),
    tta: TTAMode = typer.Option(
        TTA_MODES[0],
        help="staged: rows of model files that carry a stage choice (`edgeleuk calibrate`) run staged TTA "
             "and report the share of cells that went on to stage 2; other files stay full.",
    ),
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Measure latency, throughput and parity against the PyTorch original."""
    from edgeleuk.bench.options import BenchOptions  # lazy: the harness (~0.1 s) only when benchmarking
    from edgeleuk.bench.runner import run_bench

    opts = BenchOptions(
        backend=backend.value, n=n, batch=batch, threads=threads, extra_models=tuple(extra_model),
        quick=quick, budget_s=budget, engine_fields=dict(engine_fields or {}), tta=tta.value,
    )
    with exit_codes():
        report = run_bench(model, checkpoint=checkpoint, data=data, options=opts, json_out=json_out)
    typer.echo(report.to_markdown())
    raise typer.Exit(report.exit_code())


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the synthetic C-NMC-layout data set into."),
    subjects: int = typer.Option(24, help="Number of subjects (split subject-disjoint across folds/tests)."),
    cells_per_subject: int = typer.Option(40, help="Cells per subject."),
    seed: int = typer.Option(0, help="Random seed; the same seed writes the same files."),
    shifts: int = typer.Option(0, min=0, help="Also write this many shifted cells of each kind (blank, blur, "
                               "stain...) under OUT/shifts/, labelled, to measure the quality flags on."),
    fields: int = typer.Option(
        0, min=0, help="Write this many SYNTHETIC smear fields (with ground truth) instead of single cells."
    ),
    field_um_per_px: float | None = typer.Option(
        None, help="With --fields: the fields' micrometres per pixel (default: a 100x oil objective's)."
    ),
) -> None:
    """Write a SYNTHETIC data set in the public C-NMC release layout, or smear fields (pipeline testing only)."""
    with exit_codes():
        if fields:
            from edgeleuk.synth.fields import make_fields  # lazy: only this command draws fields

            scale = {} if field_um_per_px is None else {"um_per_px": field_um_per_px}
            typer.echo(make_fields(out, fields, seed=seed, **scale).describe())
            return
        from edgeleuk.synth.dataset import make_synthetic  # lazy: only this command draws cells

        summary = make_synthetic(out, subjects=subjects, cells_per_subject=cells_per_subject, seed=seed,
                                 shifts=shifts)
    typer.echo(summary.describe())


def _list_or_print(kind: str, name: str | None) -> None:
    with exit_codes():
        typer.echo(describe_configs(kind) if name is None else config_text(kind, name), nl=name is None)


@app.command()
def recipes(
    name: str | None = typer.Argument(None, help="Print this recipe's TOML (redirect it to a file to edit it)."),
) -> None:
    """List the training recipes shipped with edgeleuk, or print one."""
    _list_or_print("recipes", name)


@app.command()
def profiles(
    name: str | None = typer.Argument(None, help="Print this profile's TOML (redirect it to a file to edit it)."),
) -> None:
    """List the export profiles shipped with edgeleuk, or print one."""
    _list_or_print("profiles", name)
