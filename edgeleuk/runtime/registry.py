"""The backends, registered once; everything else about them is derived from their declarations.

Each backend module declares its name, the model formats it reads, its device, its ``auto``
rank, its options record and its availability check (see
:class:`~edgeleuk.runtime.base.Backend`). From the registrations below this
module derives the backend table, the ``auto`` order, which backends read which
format (:mod:`edgeleuk.io.formats`), the per-backend option fields (the CLI's flags) and opens backends
by name (``auto`` picks the best that really starts). The CLI's choices, bench's
rows and the export gate's engines come from here too.

Adding a backend: write its module, add one ``register(...)`` line here, test it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.io.formats import FORMATS, ModelFormat, format_of
from edgeleuk.runtime.base import Backend, BackendOptions
from edgeleuk.runtime.cpu import CpuBackend
from edgeleuk.runtime.cuda import CudaBackend
from edgeleuk.runtime.openvino import OpenVINOBackend
from edgeleuk.runtime.remote import RemoteBackend

log = logging.getLogger(__name__)

AUTO = "auto"
GENERIC_OPTIONS = ("threads", "views_input")
_RESERVED = (AUTO, "all", "torch")  # CLI words: auto selection, bench's every-row and reference rows

# Backend name -> class, in registration order (the order bench lists rows in).
BACKENDS: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    """Add a backend; its declarations must not clash with those already registered.

    Raises:
        ValueError: A reserved or taken name, no formats, a format not in the format table or
            not run on the backend's device, or an option field another backend already declares.
    """
    if cls.name in _RESERVED or cls.name in BACKENDS or not cls.name.isidentifier():
        raise ValueError(f"backend name {cls.name!r} is reserved, taken or not an identifier")
    if not cls.reads:
        raise ValueError(f"backend {cls.name} declares no model formats it reads")
    for name in cls.reads:
        if name not in FORMATS:
            raise ValueError(f"backend {cls.name}: model format {name!r} is not registered "
                             f"(edgeleuk.io.formats.register_format); known: {list(FORMATS)}")
        if cls.device not in FORMATS[name].devices:
            raise ValueError(f"backend {cls.name} computes on {cls.device}, which does not run {name} models")
    taken = {f.name: owner for owner, f in option_fields()}
    for f in dataclasses.fields(cls.Options):
        if f.name in GENERIC_OPTIONS or f.name in taken:
            raise ValueError(f"backend {cls.name}: option {f.name!r} is already declared "
                             f"({taken.get(f.name, 'generic')})")
    BACKENDS[cls.name] = cls
    return cls


def auto_order() -> tuple[str, ...]:
    """Backend names in the order ``auto`` tries them (by their ``auto_rank``)."""
    ranked = [name for name in BACKENDS if BACKENDS[name].auto_rank is not None]
    return tuple(sorted(ranked, key=lambda name: BACKENDS[name].auto_rank))


def explicit_only() -> tuple[str, ...]:
    """Backends ``auto`` never picks (``auto_rank`` None): they run only when named."""
    return tuple(name for name in BACKENDS if BACKENDS[name].auto_rank is None)


def readers(fmt: str) -> tuple[str, ...]:
    """Backends that read model format ``fmt``, in ``auto`` order, then those that run only when named."""
    return tuple(name for name in (*auto_order(), *explicit_only()) if fmt in BACKENDS[name].reads)


def device_of(backend: str) -> str:
    """The device (``cpu``/``gpu``) ``backend`` computes on; ``auto`` counts as ``cpu``.

    Raises:
        UsageError: An unknown backend name.
    """
    if backend == AUTO:
        return "cpu"
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose {AUTO} or one of {', '.join(BACKENDS)}")
    return BACKENDS[backend].device


def option_fields() -> list[tuple[str, dataclasses.Field[Any]]]:
    """``(backend name, field)`` for every field of every backend's own options record."""
    return [(name, f) for name, cls in BACKENDS.items() for f in dataclasses.fields(cls.Options)]


def backend_options(threads: int | None = None, engine: dict[str, Any] | None = None,
                    views_input: bool = False, **fields: Any) -> BackendOptions:
    """Build :class:`BackendOptions` from the generic ``threads`` and backend fields by name.

    Args:
        threads: Intra-op threads (every backend).
        engine: Backend name -> options record, taken as given.
        views_input: Open the graph's ``views`` entry (staged TTA; every backend).
        **fields: Fields of backends' records by field name (``precision="bf16"``); each
            name belongs to exactly one backend, which registration guarantees.

    Raises:
        UsageError: A field no backend declares, or a value its record refuses.
    """
    owners = {f.name: name for name, f in option_fields()}
    unknown = sorted(set(fields) - set(owners))
    if unknown:
        known = ", ".join([*GENERIC_OPTIONS, *owners])
        raise UsageError(f"unknown backend option(s) {', '.join(unknown)}; known: {known}")
    records = dict(engine or {})
    for name in {owners[k] for k in fields}:
        own = {k: v for k, v in fields.items() if owners[k] == name}
        base = records.get(name)
        records[name] = BACKENDS[name].Options(**own) if base is None else dataclasses.replace(base, **own)
    return BackendOptions(threads=threads, engine=records, views_input=views_input)


def _open_explicit(path: Path, fmt: ModelFormat, name: str, options: BackendOptions) -> Backend:
    cls = BACKENDS.get(name)
    if cls is None:
        raise UsageError(f"unknown backend {name!r}; choose {AUTO} or one of {', '.join(BACKENDS)}")
    if fmt.name not in cls.reads:
        able = [n for n in readers(fmt.name) if BACKENDS[n].auto_rank is not None] or readers(fmt.name)
        raise UsageError(
            f"{path.name} is an {fmt.label} ({fmt.suffix}): only the {' or '.join(able)} backend runs it; "
            f"use --backend {able[0]} (or {AUTO}), or give the {name} backend "
            f"the {' or '.join(FORMATS[k].suffix for k in cls.reads)} export"
        )
    reason = cls.availability()
    if reason:
        raise BackendUnavailable(f"backend {name} is not available: {reason}")
    return cls(path, options)


#: No GPU shown: ``auto`` gives this as a GPU backend's reason (see :func:`gpu_visible`).
NO_GPU = "no NVIDIA GPU on this machine (no nvidia-smi, no /dev/nvidia0)"


def gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU: ``nvidia-smi`` on the PATH or ``/dev/nvidia0``.

    Without one, ``auto`` names no GPU install advice (``pip install 'edgeleuk[gpu]'``): every
    CPU-only run would log it. An explicit ``--backend cuda`` still gets the advice.
    """
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


def unavailable_reason(name: str, *, asked: bool = False) -> str | None:
    """None when backend ``name`` can run here, else why not (with the fix).

    A GPU backend on a machine that shows no GPU says :data:`NO_GPU` instead of how to install
    GPU wheels, unless it was ``asked`` for by name: every CPU-only ``auto`` or ``bench`` run
    would otherwise carry that advice.
    """
    cls = BACKENDS[name]
    reason = cls.availability()
    if reason is not None and cls.device == "gpu" and not asked and not gpu_visible():
        return NO_GPU
    return reason


def _open_auto(path: Path, fmt: ModelFormat, options: BackendOptions) -> tuple[Backend, str]:
    skipped: list[str] = []
    able = [name for name in readers(fmt.name) if BACKENDS[name].auto_rank is not None]
    for name in able:
        cls = BACKENDS[name]
        reason = unavailable_reason(name)
        if reason is None:
            try:
                backend = cls(path, options)
            except BackendUnavailable as exc:
                reason = str(exc)
            else:
                why = f"first that started, on {', '.join(backend.info().providers)}"
                if len(able) == 1:
                    why += f" (an {fmt.label} runs on {name} only)"
                if skipped:
                    why += "; skipped " + "; ".join(skipped)
                return backend, why
        skipped.append(f"{name}: {reason}")
    raise BackendUnavailable(f"no backend can run {path.name}: " + "; ".join(skipped))


def choose_backend(
    model_path: Path | str, backend: str = AUTO, options: BackendOptions | None = None
) -> tuple[Backend, str]:
    """Open ``model_path`` on ``backend`` and say why that backend runs it.

    Returns:
        ``(backend, reason)``; the reason is ``"requested"`` for an explicit choice.

    Raises:
        UsageError: Missing or unsupported model file, unknown backend name, or a
            backend that cannot read this format (cpu/cuda with an ``.xml``).
        BackendUnavailable: The requested backend (or, for ``auto``, every backend)
            cannot run here; the message names the fix.
    """
    path = Path(model_path)
    options = options or BackendOptions()
    fmt = format_of(path)
    if backend == AUTO:
        opened, why = _open_auto(path, fmt, options)
        log.info("backend auto -> %s: %s", opened.name, why)
        return opened, why
    return _open_explicit(path, fmt, backend, options), "requested"


def open_backend(
    model_path: Path | str, backend: str = AUTO, options: BackendOptions | None = None
) -> Backend:
    """Open ``model_path`` on ``backend`` (``auto`` or a registered name).

    ``auto`` tries the backends that read the file in :func:`auto_order` (cuda only
    if a session really starts on the CUDA provider, then openvino, then cpu) and
    logs its choice and why. An explicit backend that cannot run raises
    :class:`BackendUnavailable`; nothing falls back silently.
    """
    return choose_backend(model_path, backend, options)[0]


# The registrations: one line per backend. Their order is the order bench lists rows in.
register(CpuBackend)
register(OpenVINOBackend)
register(CudaBackend)
register(RemoteBackend)
