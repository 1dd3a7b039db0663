"""The ``edgeleuk`` command line: parses arguments and calls library functions.

Exit codes: 0 success; 1 the job ran but failed (parity gate breached, ``--strict``
with failed files, an engine fault, an output that cannot be written); 2 usage error
(bad arguments, missing inputs, unavailable backend, a model file that breaks the contract,
a command whose extra is not installed).

Conventions every command keeps: a model file is ``--model/-m``, a checkpoint
``--checkpoint``, images to measure or calibrate on ``--data``; ``--out`` is a file where
one file is written and a folder where several are (each ``--out`` help says which).
Older spellings (a positional MODEL or CKPT, ``export --calib``) still work with a note
on stderr.

Logging (stderr): INFO by default, warnings and errors only with ``--quiet`` (results and
summaries still go to stdout), DEBUG with ``--verbose``. The libraries' own chatter (NNCF's
INFO lines, torch's log and Python warnings) appears only with ``--verbose``.

Imports: only what the parser itself needs is imported here (typer, the backend
registry for the choices and flags, the TTA modes, predict's defaults), so
``edgeleuk --help`` loads no engine and no command's library. Each command imports
its library module when it runs (``# lazy:`` says why where it matters): the
torch, SciPy and NNCF ones behind :func:`_needs_train`, which turns a missing
training library into exit 2 naming the extra.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib.abc
import importlib.machinery
import inspect
import json
import logging
import sys
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import typer

from edgeleuk import __version__
from edgeleuk.core.config import config_text, describe_configs
from edgeleuk.core.errors import EdgeleukError, UsageError
from edgeleuk.runtime.registry import AUTO, BACKENDS, auto_order, backend_options, explicit_only, option_fields
from edgeleuk.runtime.staged import DEFAULT_AGREEMENT, TTA_MODES
from edgeleuk.workflow.predict import DEFAULT_OUT, PredictOptions
from edgeleuk.workflow.predict import predict as run_predict

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
# edgeleuk.bench.options.bench_choices() spelled from the registry here: importing edgeleuk.bench loads its
# whole harness (~0.1 s) on every `edgeleuk --help`. tests/test_cli_conventions.py checks the two agree.
BenchBackend = _choice("BenchBackend", ("all", *BACKENDS, "torch"),
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
MODEL_HELP = "Exported model (.onnx or OpenVINO .xml)."
MODEL_FLAG = "--model/-m"


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


#: Top-level modules of the ``train`` extra (and what it brings): a command that meets one missing needs it.
TRAIN_MODULES = frozenset(
    {"torch", "torchvision", "timm", "nncf", "scipy", "matplotlib", "onnx", "onnxscript", "PIL", "tqdm", "safetensors"}
)


@contextlib.contextmanager
def _needs_train(command: str) -> Iterator[None]:
    """Turn a missing training library, met anywhere in ``command``, into exit 2 naming the extra.

    A torch-free install (the microscope PC's) runs predict, watch and the rest; the commands
    that train, export or read checkpoints import torch (or SciPy, NNCF...) when they run. Without
    this they would end in a ModuleNotFoundError traceback.
    """
    try:
        yield
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in TRAIN_MODULES:
            raise
        raise UsageError(f"edgeleuk {command} needs the training extra: pip install 'edgeleuk[train]' "
                         f"({missing} is not installed)") from exc


def _one_path(flag: Path | None, positional: Path | None, flag_name: str, what: str) -> Path:
    """The path given as ``flag_name`` or, deprecated, positionally (with a note on stderr).

    Raises:
        UsageError: Both given, or neither (exit 2).
    """
    if flag is not None and positional is not None:
        raise UsageError(f"give the {what.lower()} once: {flag_name} {flag} or the positional {what} {positional} "
                         f"(deprecated), not both")
    if positional is not None:
        typer.echo(f"note: the positional {what} is deprecated; use {flag_name}", err=True)
        return positional
    if flag is None:
        raise UsageError(f"missing {flag_name}: name the {what.lower()} file")
    return flag


#: Library logger -> (the module whose import sets that logger's level, the level edgeleuk sets right after).
#: NNCF sets INFO and adds a stdout handler when imported (seconds into an INT8 export); torch's logging
#: set-up sets WARNING ("No CUDA runtime is found" on a CPU machine). A level set before is overwritten.
QUIET_LOGGERS = {
    "nncf": ("nncf.common.logging.logger", logging.WARNING),
    "torch": ("torch", logging.ERROR),
}
#: Libraries whose Python warnings are chatter unless --verbose (torch's CUDA warning on a CPU machine...).
CHATTY_LIBRARIES = ("torch", "torchvision", "timm", "nncf", "onnxscript")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then[name](module)`` right after the module ``name`` is first executed; finds nothing itself."""

    def __init__(self, then: dict[str, Callable[[ModuleType], None]]) -> None:
        self.then = then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        then = self.then.get(fullname)
        if then is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            then(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _set_level(logger: str, level: int) -> Callable[[ModuleType], None]:
    # The logger only (not nncf.set_log_level, which also re-levels every handler on it, maybe shared ones).
    return lambda _module: logging.getLogger(logger).setLevel(level)


def _quiet_libraries() -> None:
    """Without --verbose: NNCF's and torch's loggers and the chatty libraries' warnings stay quiet."""
    for name in CHATTY_LIBRARIES:
        warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
    later = {}
    for logger, (module, level) in QUIET_LOGGERS.items():
        if module in sys.modules:
            _set_level(logger, level)(sys.modules[module])
        else:
            later[module] = _set_level(logger, level)
    if later and not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(later))


def _quiet(ctx: typer.Context) -> bool:
    """Whether the root ``--quiet`` was given (it hides progress bars too)."""
    return bool(ctx.find_root().params.get("quiet"))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"edgeleuk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log debug details, and the libraries' own messages (NNCF, torch warnings)."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Log only warnings and errors; results and summaries are still printed."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print edgeleuk's version and exit."
    ),
) -> None:
    if verbose and quiet:
        with _exit_codes():
            raise UsageError("--verbose and --quiet exclude each other; give one")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        _quiet_libraries()


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the synthetic C-NMC-layout data set into."),
    subjects: int = typer.Option(24, help="Number of subjects (split subject-disjoint across folds/tests)."),
    cells_per_subject: int = typer.Option(40, help="Cells per subject."),
    seed: int = typer.Option(0, help="Random seed; the same seed writes the same files."),
) -> None:
    """Write a SYNTHETIC data set in the public C-NMC release layout (pipeline testing only)."""
    from edgeleuk.synth.dataset import make_synthetic  # lazy: only this command draws cells

    with _exit_codes():
        summary = make_synthetic(out, subjects=subjects, cells_per_subject=cells_per_subject, seed=seed)
    typer.echo(summary.describe())


@app.command("import-checkpoint")
def import_checkpoint(
    src: Path = typer.Argument(..., help="The paper's model.pt (DataParallel state dict)."),
    out: Path = typer.Argument(..., help="File: the edgeleuk checkpoint to write."),
) -> None:
    """Convert the paper's published model.pt into an edgeleuk checkpoint."""
    with _exit_codes(), _needs_train("import-checkpoint"):
        from edgeleuk.modeling.checkpoint import import_paper_checkpoint  # lazy: torch

        ckpt = import_paper_checkpoint(src, out)
    typer.echo(f"wrote {out} ({ckpt.meta.arch}, {len(ckpt.state_dict)} tensors)")


@app.command()
def train(
    data: Path = typer.Argument(..., help="C-NMC data root (public release or the paper's layout)."),
    recipe: str = typer.Option("paper", help="Recipe: a packaged name (see `edgeleuk recipes`) or a TOML file."),
    out: Path = typer.Option(..., help="Folder for the run (checkpoints, metrics.jsonl, plots)."),
    seed: int | None = typer.Option(None, help="Seed; overrides the recipe's."),
    pretrained: str | None = typer.Option(None, help="'imagenet' or a local state-dict file."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in OUT."),
) -> None:
    """Train the classifier with a recipe (the paper's by default)."""
    with _exit_codes(), _needs_train("train"):
        from edgeleuk.training.loop import train as train_run  # lazy: torch

        result = train_run(data, recipe=recipe, out=out, seed=seed, pretrained=pretrained, resume=resume)
    typer.echo(result.describe())


@app.command()
def sweep(
    data: Path = typer.Argument(..., help="C-NMC data root."),
    recipe: str = typer.Option("paper", help="Recipe: a packaged name (see `edgeleuk recipes`) or a TOML file."),
    seeds: int = typer.Option(24, help="Number of seeds (0..N-1)."),
    out: Path = typer.Option(..., help="Folder for the sweep; each seed in OUT/seed-N."),
    pretrained: str | None = typer.Option(None, help="'imagenet' or a local state-dict file."),
    cluster: str | None = typer.Option(
        None, help="Run one Ray task per seed: 'auto' (running cluster, else local Ray) or an address."
    ),
) -> None:
    """Train one run per seed and write the paper's Table 2 (Markdown + JSON)."""
    with _exit_codes(), _needs_train("sweep"):
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
    with _exit_codes(), _needs_train("compare"):
        from edgeleuk.training.compare import compare_sweeps  # lazy: scipy, matplotlib

        report = compare_sweeps(sweeps, out=out)
    typer.echo(report.to_markdown())


@app.command()
def export(
    ckpt_arg: Path | None = typer.Argument(
        None, metavar="CKPT", show_default=False, help="Deprecated: use --checkpoint."
    ),
    checkpoint: Path | None = typer.Option(None, help="edgeleuk checkpoint (.pt) to export."),
    out: Path = typer.Option(
        Path("model.onnx"), help="File to write: .onnx (or .xml for an OpenVINO IR profile)."
    ),
    profile: str = typer.Option("cpu-fp32", help="Profile: a packaged name (see `edgeleuk profiles`) or a TOML file."),
    data: Path | None = typer.Option(None, help="Real images for the parity gate and INT8 calibration."),
    calib: Path | None = typer.Option(None, hidden=True, help="Deprecated: use --data."),
) -> None:
    """Export one ONNX graph with preprocessing and rotation TTA folded in, through the parity gate."""
    with _exit_codes():
        ckpt = _one_path(checkpoint, ckpt_arg, "--checkpoint", "CKPT")
        if calib is not None:
            if data is not None:
                raise UsageError("give the images once: --data (--calib is its deprecated name)")
            typer.echo("note: --calib is deprecated; use --data", err=True)
            data = calib
        with _needs_train("export"):
            from edgeleuk.exporting import export_model  # lazy: torch, onnx, openvino

            result = export_model(ckpt, out=out, profile=profile, calib=data)
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

    with _exit_codes():
        if checkpoint is not None and (model is not None or model_arg is not None):
            raise UsageError("give one file: --model/-m or --checkpoint")
        path = checkpoint if checkpoint is not None else _one_path(model, model_arg, MODEL_FLAG, "MODEL")
        is_ckpt = True if checkpoint is not None else None  # None: decided by the suffix
        torch_needed = checkpoint is not None or path.suffix.lower() in CHECKPOINT_SUFFIXES
        with _needs_train("info") if torch_needed else contextlib.nullcontext():
            if as_json:
                text = json.dumps(model_file_record(path, checkpoint=is_ckpt), indent=2, sort_keys=True, default=str)
            else:
                text = describe_model_file(path, checkpoint=is_ckpt)
    typer.echo(text)


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
    cluster: str | None = typer.Option(
        None, help="Spread the work over Ray: 'auto' (running cluster, else local Ray) or an address."
    ),
    cluster_workers: int | None = typer.Option(
        None, min=1, help="With --cluster: engine workers (default: from the free CPUs/GPUs)."
    ),
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

    Exit codes: 0 at least one file classified (failures are listed);
    1 none classified, --strict with any failed file, cnmc refused, an engine
    fault (rows made before it go to OUT.partial.csv) or an unwritable OUT;
    2 usage error (missing model, an input that matches nothing, no images,
    backend unavailable).
    """
    with _exit_codes():
        engine = backend_options(**(engine_fields or {})).engine
        opts = PredictOptions(
            backend=backend.value, batch=batch, threads=threads, threshold=threshold, recursive=recursive,
            fmt=fmt.value, engine=engine, tta=tta.value, progress=not _quiet(ctx),
        )
        if cluster:
            from edgeleuk.cluster.predict import cluster_predict  # lazy: the Ray side (Ray itself loads on connect)

            summary = cluster_predict(inputs, model, out, opts, address=cluster, workers=cluster_workers)
        else:
            summary = run_predict(inputs, model=model, out=out, options=opts)
    typer.echo(summary.describe())
    raise typer.Exit(summary.exit_code(strict=strict))


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
    from edgeleuk.bench import BenchOptions, run_bench  # lazy: the harness (~0.1 s) only when benchmarking

    opts = BenchOptions(
        backend=backend.value, n=n, batch=batch, threads=threads, extra_models=tuple(extra_model),
        quick=quick, budget_s=budget, engine_fields=dict(engine_fields or {}), tta=tta.value,
    )
    with _exit_codes():
        report = run_bench(model, checkpoint=checkpoint, data=data, options=opts, json_out=json_out)
    typer.echo(report.to_markdown())
    raise typer.Exit(report.exit_code())


@app.command()
@backend_flags
def serve(
    model_arg: Path | None = typer.Argument(
        None, metavar="MODEL", show_default=False, help="Deprecated: use --model/-m."
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Exported model (.onnx or OpenVINO .xml) on this machine."
    ),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend of every replica."),
    replicas: int = typer.Option(1, min=1, help="Model replicas (processes, each with its engine)."),
    threads: int = typer.Option(1, min=1, help="Engine threads (and reserved CPUs) per replica."),
    gpus: float = typer.Option(0.0, min=0.0, help="GPUs reserved per replica (fractions share one)."),
    max_batch: int = typer.Option(8, min=1, help="Most images per engine call (server-side batching)."),
    batch_wait_ms: float = typer.Option(5.0, min=0.0, help="How long a request waits for a batch to fill."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 accepts other machines."),
    port: int = typer.Option(8000, min=1, max=65535, help="HTTP port."),
    address: str | None = typer.Option(None, help="Ray cluster to join (default: running one, else local)."),
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Serve the model over HTTP with Ray Serve (GET /healthz, GET /metadata, POST /predict) until Ctrl-C."""
    from edgeleuk.serving.server import ServeOptions, serve_forever  # lazy: the server side (asyncio, Ray Serve)

    with _exit_codes():
        path = _one_path(model, model_arg, MODEL_FLAG, "MODEL")
        opts = ServeOptions(
            backend=backend.value, replicas=replicas, threads=threads, gpus=gpus, max_batch=max_batch,
            batch_wait_ms=batch_wait_ms, host=host, port=port, address=address,
            engine_fields=dict(engine_fields or {}),
        )
        serve_forever(path, opts, echo=typer.echo)


@app.command("serving-repo")
def serving_repo(
    out: Path = typer.Argument(..., help="Folder (new) for the repositories: triton/ and ovms/."),
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
    from edgeleuk.serving.repository import RepoOptions, write_serving_repos

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
    with _exit_codes(), _needs_train("demo"):
        from edgeleuk.demo import run_demo  # lazy: torch (the whole pipeline)

        run_demo(out, fast=fast)


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
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Pick the decision threshold that reaches a target sensitivity with the best specificity.

    The same pass chooses the staged-TTA stages at that threshold (which rotations
    first, and how far from the threshold a cell must be to stop there); the model
    then accepts `--tta staged`. With --backend remote --server URL the cells are
    scored on an `edgeleuk serve` server (threshold only: it computes no single rotations).
    """
    from edgeleuk.workflow.calibrate import calibrate_model

    with _exit_codes():
        path = _one_path(model, model_arg, MODEL_FLAG, "MODEL")
        point = calibrate_model(path, data=data, sensitivity=None if keep_threshold else sensitivity, out=out,
                                backend=backend.value, staged_agreement=staged_agreement,
                                engine_fields=engine_fields)
    typer.echo(point.describe())


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
    from edgeleuk.runtime.classifier import Classifier
    from edgeleuk.workflow.watch import FaultPolicy, watch_folder

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
    out: Path = typer.Option(Path("report.html"), help="File to write: the self-contained HTML report."),
    images: Path | None = typer.Option(
        None, help="Folder the CSV's relative paths start from (the folder predict/watch named in its summary)."
    ),
) -> None:
    """Write a self-contained HTML patient-level report."""
    from edgeleuk.workflow.report import write_report

    with _exit_codes():
        path = write_report(predictions, out=out, images=images)
    typer.echo(f"wrote {path}")


def main() -> None:
    """Console-script entry point (``edgeleuk``)."""
    app()


if __name__ == "__main__":
    main()
