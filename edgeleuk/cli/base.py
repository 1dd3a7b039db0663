"""What every command shares: the Typer app, registry-derived choices and flags, exit codes, root options."""

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

from edgeleuk import __version__
from edgeleuk.bench.options import bench_choices
from edgeleuk.cli.chatter import quiet_libraries
from edgeleuk.core.errors import EdgeleukError, UsageError
from edgeleuk.core.text import printable
from edgeleuk.runtime.registry import AUTO, BACKENDS, auto_order, explicit_only, option_fields
from edgeleuk.runtime.staged import TTA_MODES
from edgeleuk.workflow.flags import QC_MODES

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

QcMode = _choice("QcMode", QC_MODES, "What a flagged cell's row says: flag (label kept), strict (no label), off.")

QC_HELP = ("Quality and distribution checks: flag (a flagged cell keeps its label; the qc column says why), "
           "strict (a flagged cell gets status=flagged and no label, and is left out of the counts and metrics) "
           "or off (no checks). Flags never change the exit code.")

MODEL_HELP = "Exported model (.onnx or OpenVINO .xml)."

MODEL_FLAG = "--model/-m"


class OutFormat(str, enum.Enum):
    """Prediction file formats."""

    csv = "csv"
    jsonl = "jsonl"
    cnmc = "cnmc"


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Report an EdgeleukError as ``error: ...`` on stderr and exit with its code (1 or 2), no traceback."""
    try:
        yield
    except EdgeleukError as exc:
        typer.echo(f"error: {printable(exc, keep_newlines=True)}", err=True)  # names come from files
        raise typer.Exit(exc.exit_code) from None


#: Top-level modules of the ``train`` extra (and what it brings): a command that meets one missing needs it.
TRAIN_MODULES = frozenset(
    {"torch", "torchvision", "timm", "nncf", "scipy", "matplotlib", "onnx", "onnxscript", "PIL", "tqdm", "safetensors"}
)


@contextlib.contextmanager
def needs_train(command: str) -> Iterator[None]:
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


def one_path(flag: Path | None, positional: Path | None, flag_name: str, what: str) -> Path:
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


def is_quiet(ctx: typer.Context) -> bool:
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
        with exit_codes():
            raise UsageError("--verbose and --quiet exclude each other; give one")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        quiet_libraries()
