"""The ``edgeleuk`` command line: parses arguments and calls library functions.

Exit codes: 0 success; 1 the job ran but failed (parity gate breached, ``--strict``
with failed files, an engine fault, an output that cannot be written); 2 usage error
(bad arguments, missing inputs, unavailable backend, a model file that breaks the contract).
The torch-free commands' library modules are imported here; the commands that
need torch, SciPy or Ray import theirs inside the command (the comment says
which), so ``edgeleuk --help`` starts fast and the torch-free commands never
load torch.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import logging
import sys
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import typer

from edgeleuk.bench import BenchOptions, run_bench
from edgeleuk.bench.options import bench_choices
from edgeleuk.cluster.predict import cluster_predict
from edgeleuk.core.config import config_text, describe_configs
from edgeleuk.core.errors import EdgeleukError
from edgeleuk.info import describe_model_file
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.registry import AUTO, BACKENDS, auto_order, backend_options, explicit_only, option_fields
from edgeleuk.runtime.staged import DEFAULT_AGREEMENT, TTA_MODES
from edgeleuk.serving.repository import RepoOptions, write_serving_repos
from edgeleuk.serving.server import ServeOptions, serve_forever
from edgeleuk.synth.dataset import make_synthetic
from edgeleuk.workflow.calibrate import calibrate_model
from edgeleuk.workflow.predict import PredictOptions
from edgeleuk.workflow.predict import predict as run_predict
from edgeleuk.workflow.report import write_report
from edgeleuk.workflow.watch import FaultPolicy, watch_folder

app = typer.Typer(
    name="edgeleuk",
    help="Leukaemia-cell classifier (Prellberg & Kramer, ISBI 2019 C-NMC): train, export, predict, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _choice(name: str, values: Iterable[str], doc: str) -> Any:
    """A typer choice Enum whose members are ``values`` (each named and valued as itself)."""
    choice = enum.Enum(name, {v: v for v in values}, type=str)
    choice.__doc__ = doc
    return choice


# Derived from the backend registry: a registered backend appears here without editing this file.
BackendChoice = _choice(
    "BackendChoice", (AUTO, *auto_order(), *explicit_only()),
    f"Inference backends; auto picks the first that really starts ({', '.join(auto_order())}).",
)
BenchBackend = _choice("BenchBackend", bench_choices(),
                       "What bench measures: every backend, one of them, or the PyTorch original.")


def _flag(backend: str, field: Any) -> inspect.Parameter:
    """The CLI parameter for one field of a backend's own options record."""
    default, meta = field.default, field.metadata
    annotation = typing.get_type_hints(BACKENDS[backend].Options)[field.name]
    if meta.get("choices"):
        annotation = _choice(field.name.capitalize(), meta["choices"], meta.get("help", ""))
        default = annotation(default)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, help=meta.get("help")))


def backend_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` one flag per backend option field (``--precision``, ``--tensorrt``...).

    The values reach ``command`` as ``engine_fields`` (field name -> value), for
    :func:`edgeleuk.runtime.registry.backend_options`.
    """
    flags = [_flag(backend, f) for backend, f in option_fields()]
    names = [p.name for p in flags]
    params = inspect.signature(command, eval_str=True).parameters.values()
    own = [p for p in params if p.name != "engine_fields"]
    clash = {p.name for p in own} & set(names)
    if clash:
        raise TypeError(f"{command.__name__}: backend option(s) {sorted(clash)} clash with its parameters")

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        fields = {n: getattr(v, "value", v) for n, v in ((n, kwargs.pop(n)) for n in names)}
        command(*args, engine_fields=fields, **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *flags])  # type: ignore[attr-defined]
    return wrapper


TTAMode = _choice("TTAMode", TTA_MODES, "Rotation TTA: every rotation, or staged (stop early when clear).")

TTA_HELP = ("Rotation TTA: full (all rotations, the file's own result) or staged (stop after a few "
            "rotations when the answer is clear; needs a stage choice from `edgeleuk calibrate`).")


class OutFormat(str, enum.Enum):
    """Prediction file formats."""

    csv = "csv"
    jsonl = "jsonl"
    cnmc = "cnmc"


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """Report an EdgeleukError as ``error: ...`` on stderr and exit with its code (1 or 2), no traceback."""
    try:
        yield
    except EdgeleukError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the synthetic C-NMC-layout data set into."),
    subjects: int = typer.Option(24, help="Number of subjects (split subject-disjoint across folds/tests)."),
    cells_per_subject: int = typer.Option(40, help="Cells per subject."),
    seed: int = typer.Option(0, help="Random seed; the same seed writes the same files."),
) -> None:
    """Write a SYNTHETIC data set in the public C-NMC release layout (pipeline testing only)."""
    with _exit_codes():
        summary = make_synthetic(out, subjects=subjects, cells_per_subject=cells_per_subject, seed=seed)
    typer.echo(summary.describe())


@app.command("import-checkpoint")
def import_checkpoint(
    src: Path = typer.Argument(..., help="The paper's model.pt (DataParallel state dict)."),
    out: Path = typer.Argument(..., help="edgeleuk checkpoint to write."),
) -> None:
    """Convert the paper's published model.pt into an edgeleuk checkpoint."""
    from edgeleuk.modeling.checkpoint import import_paper_checkpoint  # lazy: torch

    with _exit_codes():
        ckpt = import_paper_checkpoint(src, out)
    typer.echo(f"wrote {out} ({ckpt.meta.arch}, {len(ckpt.state_dict)} tensors)")


@app.command()
def train(
    data: Path = typer.Argument(..., help="C-NMC data root (public release or the paper's layout)."),
    recipe: str = typer.Option("paper", help="Recipe: a packaged name (see `edgeleuk recipes`) or a TOML file."),
    out: Path = typer.Option(..., help="Run folder (checkpoints, metrics.jsonl, plots)."),
    seed: int | None = typer.Option(None, help="Seed; overrides the recipe's."),
    pretrained: str | None = typer.Option(None, help="'imagenet' or a local state-dict file."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in OUT."),
) -> None:
    """Train the classifier with a recipe (the paper's by default)."""
    from edgeleuk.training.loop import train as train_run  # lazy: torch

    with _exit_codes():
        result = train_run(data, recipe=recipe, out=out, seed=seed, pretrained=pretrained, resume=resume)
    typer.echo(result.describe())


@app.command()
def sweep(
    data: Path = typer.Argument(..., help="C-NMC data root."),
    recipe: str = typer.Option("paper", help="Recipe: a packaged name (see `edgeleuk recipes`) or a TOML file."),
    seeds: int = typer.Option(24, help="Number of seeds (0..N-1)."),
    out: Path = typer.Option(..., help="Sweep folder; each seed in OUT/seed-N."),
    pretrained: str | None = typer.Option(None, help="'imagenet' or a local state-dict file."),
    cluster: str | None = typer.Option(
        None, help="Run one Ray task per seed: 'auto' (running cluster, else local Ray) or an address."
    ),
) -> None:
    """Train one run per seed and write the paper's Table 2 (Markdown + JSON)."""
    with _exit_codes():
        if cluster:
            from edgeleuk.cluster.sweep import cluster_sweep  # lazy: torch, ray

            table = cluster_sweep(data, recipe=recipe, seeds=seeds, out=out, pretrained=pretrained, address=cluster)
        else:
            from edgeleuk.training.sweep import run_sweep  # lazy: torch

            table = run_sweep(data, recipe=recipe, seeds=seeds, out=out, pretrained=pretrained)
    typer.echo(table.to_markdown())


@app.command()
def compare(
    sweeps: list[Path] = typer.Argument(..., help="Sweep folders to compare."),
    out: Path = typer.Option(Path("compare"), help="Folder for the figure and the test results."),
) -> None:
    """Compare sweeps: mean +- std curves (Figure 4) and one-sided Mann-Whitney U tests."""
    from edgeleuk.training.compare import compare_sweeps  # lazy: scipy, matplotlib

    with _exit_codes():
        report = compare_sweeps(sweeps, out=out)
    typer.echo(report.to_markdown())


@app.command()
def export(
    ckpt: Path = typer.Argument(..., help="edgeleuk checkpoint."),
    out: Path = typer.Option(Path("model.onnx"), help="Output .onnx (or .xml for an OpenVINO IR profile)."),
    profile: str = typer.Option("cpu-fp32", help="Profile: a packaged name (see `edgeleuk profiles`) or a TOML file."),
    calib: Path | None = typer.Option(None, help="Real images for the parity gate and INT8 calibration."),
) -> None:
    """Export one ONNX graph with preprocessing and rotation TTA folded in, through the parity gate."""
    from edgeleuk.exporting import export_model  # lazy: torch, onnx, openvino

    with _exit_codes():
        result = export_model(ckpt, out=out, profile=profile, calib=calib)
    typer.echo(result.describe())


def _list_or_print(kind: str, name: str | None) -> None:
    with _exit_codes():
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


@app.command()
def info(
    model: Path = typer.Argument(..., help="Exported .onnx or OpenVINO .xml, or a checkpoint .pt."),
) -> None:
    """Print the metadata stored in a model file."""
    with _exit_codes():
        typer.echo(describe_model_file(model))


@app.command()
@backend_flags
def predict(
    folder: Path = typer.Argument(..., help="Folder of cell images."),
    model: Path = typer.Option(..., help="Exported model (.onnx or OpenVINO .xml)."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
    out: Path = typer.Option(
        Path("predictions.csv"),
        help="Output file, written atomically (default .jsonl/.zip for those formats).",
    ),
    batch: int | None = typer.Option(
        None, min=1,
        help="Images per inference batch (x rotations views per call); default: chosen from the model's "
             "precision to keep predict under 1 GB.",
    ),
    threads: int | None = typer.Option(None, min=1, help="Inference threads (default: backend's)."),
    threshold: float | None = typer.Option(None, help="Decision threshold (default: the model's)."),
    recursive: bool = typer.Option(False, help="Descend into sub-folders."),
    fmt: OutFormat = typer.Option(OutFormat.csv, "--format", help="csv, jsonl or cnmc (challenge zip)."),
    strict: bool = typer.Option(False, help="Exit 1 if any file failed."),
    tta: TTAMode = typer.Option(TTA_MODES[0], help=TTA_HELP),
    cluster: str | None = typer.Option(
        None, help="Spread the work over Ray: 'auto' (running cluster, else local Ray) or an address."
    ),
    cluster_workers: int | None = typer.Option(
        None, min=1, help="With --cluster: engine workers (default: from the free CPUs/GPUs)."
    ),
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Classify every image in FOLDER; one output row per input file.

    Bad files (empty, corrupt, not an image, wrong bit depth) become error rows.
    Other sizes are padded or cropped (never resized) and flagged.
    The output is written atomically: complete or absent.
    --format cnmc writes the challenge zip (isbi_valid.predict, one 0/1 line per
    N.bmp in numeric order); if any image failed it writes nothing and exits 1.

    Exit codes: 0 at least one file classified (failures are listed);
    1 none classified, --strict with any failed file, cnmc refused, an engine
    fault (rows made before it go to OUT.partial.csv) or an unwritable OUT;
    2 usage error (missing model or folder, no images, backend unavailable).
    """
    with _exit_codes():
        engine = backend_options(**(engine_fields or {})).engine
        opts = PredictOptions(
            backend=backend.value, batch=batch, threads=threads, threshold=threshold, recursive=recursive,
            fmt=fmt.value, engine=engine, tta=tta.value,
        )
        if cluster:
            summary = cluster_predict(folder, model, out, opts, address=cluster, workers=cluster_workers)
        else:
            summary = run_predict(folder, model=model, out=out, options=opts)
    typer.echo(summary.describe())
    raise typer.Exit(summary.exit_code(strict=strict))


@app.command()
@backend_flags
def bench(
    model: Path = typer.Option(..., help="Exported model (.onnx or OpenVINO .xml)."),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint for the torch reference row."),
    backend: BenchBackend = typer.Option(BenchBackend.all, help="Backend(s) to measure."),
    data: Path | None = typer.Option(None, help="Images (labelled C-NMC layout gives F1)."),
    n: int = typer.Option(32, min=1, help="Number of cells."),
    batch: int = typer.Option(8, min=1, help="Largest batch size tried for throughput."),
    threads: int | None = typer.Option(None, min=1, help="Inference threads."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the JSON record here."),
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
    opts = BenchOptions(
        backend=backend.value, n=n, batch=batch, threads=threads, extra_models=tuple(extra_model),
        quick=quick, budget_s=budget, engine_fields=dict(engine_fields or {}), tta=tta.value,
    )
    with _exit_codes():
        report = run_bench(model, checkpoint=checkpoint, data=data, options=opts, json_out=json_out)
    typer.echo(report.to_markdown())
    raise typer.Exit(report.exit_code())


@app.command()
def serve(
    model: Path = typer.Argument(..., help="Exported model (.onnx or OpenVINO .xml) on this machine."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend of every replica."),
    replicas: int = typer.Option(1, min=1, help="Model replicas (processes, each with its engine)."),
    threads: int = typer.Option(1, min=1, help="Engine threads (and reserved CPUs) per replica."),
    gpus: float = typer.Option(0.0, min=0.0, help="GPUs reserved per replica (fractions share one)."),
    max_batch: int = typer.Option(8, min=1, help="Most images per engine call (server-side batching)."),
    batch_wait_ms: float = typer.Option(5.0, min=0.0, help="How long a request waits for a batch to fill."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 accepts other machines."),
    port: int = typer.Option(8000, min=1, max=65535, help="HTTP port."),
    address: str | None = typer.Option(None, help="Ray cluster to join (default: running one, else local)."),
) -> None:
    """Serve MODEL over HTTP with Ray Serve (GET /healthz, GET /metadata, POST /predict) until Ctrl-C."""
    with _exit_codes():
        opts = ServeOptions(
            backend=backend.value, replicas=replicas, threads=threads, gpus=gpus, max_batch=max_batch,
            batch_wait_ms=batch_wait_ms, host=host, port=port, address=address,
        )
        serve_forever(model, opts, echo=typer.echo)


@app.command("serving-repo")
def serving_repo(
    out: Path = typer.Argument(..., help="New folder for the repositories (triton/ and ovms/)."),
    model: list[Path] = typer.Option(
        [], "--model", "-m",
        help="Exported model, repeatable; each goes to its format's repository (.onnx: Triton, .xml: OVMS).",
    ),
    onnx: Path | None = typer.Option(None, hidden=True, help="Deprecated: use --model."),
    ir: Path | None = typer.Option(None, hidden=True, help="Deprecated: use --model."),
    name: str = typer.Option("edgeleuk", help="Model name in both repositories."),
    max_batch: int = typer.Option(8, min=1, help="Triton max_batch_size (dynamic batching up to it)."),
    gpu: bool | None = typer.Option(None, help="Triton instances on GPU (default: only for an fp16 export)."),
    tensorrt: bool = typer.Option(False, help="Triton: ONNX Runtime's TensorRT accelerator (GPU)."),
) -> None:
    """Write Triton Inference Server and/or OpenVINO Model Server model repositories."""
    with _exit_codes():
        opts = RepoOptions(name=name, max_batch=max_batch, gpu=gpu, tensorrt=tensorrt)
        models = [*model, *(p for p in (onnx, ir) if p is not None)]
        if onnx or ir:
            typer.echo("note: --onnx and --ir are deprecated; use --model (each model goes to its format's "
                       "repository)", err=True)
        result = write_serving_repos(out, models, options=opts)
    typer.echo(result.describe())


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), help="Folder for every demo artefact."),
    fast: bool = typer.Option(False, help="Tiny scale (smoke recipe, few cells): a minute, not minutes."),
) -> None:
    """Synthesise data, train, export (fp32 + INT8), predict and bench: the whole pipeline."""
    from edgeleuk.demo import run_demo  # lazy: torch (the whole pipeline)

    with _exit_codes():
        run_demo(out, fast=fast)


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="Exported model."),
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
    out: Path = typer.Option(..., help="Model file to write with the new threshold."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
) -> None:
    """Pick the decision threshold that reaches a target sensitivity with the best specificity.

    The same pass chooses the staged-TTA stages at that threshold (which rotations
    first, and how far from the threshold a cell must be to stop there); the model
    then accepts `--tta staged`.
    """
    with _exit_codes():
        point = calibrate_model(model, data=data, sensitivity=None if keep_threshold else sensitivity, out=out,
                                backend=backend.value, staged_agreement=staged_agreement)
    typer.echo(point.describe())


@app.command()
@backend_flags
def watch(
    folder: Path = typer.Argument(..., help="Folder the microscope writes images into."),
    model: Path = typer.Option(..., help="Exported model."),
    out: Path = typer.Option(Path("predictions.csv"), help="CSV to append one row per image to."),
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
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Classify images as they arrive; Ctrl-C stops cleanly; a restart resumes.

    A file is read once its size has stopped changing; one row per image is
    appended to OUT and flushed to disk at once, so nothing classified is lost
    in a crash. Files already in OUT are not classified again; one overwritten
    under the same name gets a new row. An engine fault writes no row: the files
    are tried again with backoff, then watch stops (exit 1). A full disk or
    read-only OUT stops it too (exit 1), keeping every row written.
    """
    with _exit_codes():
        # --server etc. reach the backend
        clf = Classifier.load(model, backend.value, tta=tta.value, **(engine_fields or {}))
        summary = watch_folder(
            folder, model=model, out=out, backend=backend.value, interval=interval, recursive=recursive,
            faults=FaultPolicy(retries=fault_retries, backoff_s=fault_backoff),
            classifier=clf,
        )
    typer.echo(summary.describe())


@app.command()
def report(
    predictions: Path = typer.Argument(..., help="predictions.csv from predict or watch."),
    out: Path = typer.Option(Path("report.html"), help="Self-contained HTML report."),
    images: Path | None = typer.Option(
        None, help="Folder the CSV's relative paths start from (the folder given to predict/watch)."
    ),
) -> None:
    """Write a self-contained HTML patient-level report."""
    with _exit_codes():
        path = write_report(predictions, out=out, images=images)
    typer.echo(f"wrote {path}")


def main() -> None:
    """Console-script entry point (``edgeleuk``)."""
    app()


if __name__ == "__main__":
    main()
