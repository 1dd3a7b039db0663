"""Choose and open an inference backend by name (``auto`` picks the best that really starts)."""

from __future__ import annotations

import logging
from pathlib import Path

from edgeleuk.errors import BackendUnavailable, UsageError
from edgeleuk.runtime.base import Backend, BackendOptions
from edgeleuk.runtime.cpu import CpuBackend
from edgeleuk.runtime.cuda import CudaBackend
from edgeleuk.runtime.modelfile import model_kind
from edgeleuk.runtime.openvino import OpenVINOBackend

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Backend]] = {"cuda": CudaBackend, "openvino": OpenVINOBackend, "cpu": CpuBackend}
AUTO_ORDER = ("cuda", "openvino", "cpu")
# Which backends can read which model files.
RUNS = {"onnx": ("cuda", "openvino", "cpu"), "ir": ("openvino",)}


def _open_explicit(path: Path, kind: str, name: str, options: BackendOptions) -> Backend:
    cls = BACKENDS.get(name)
    if cls is None:
        raise UsageError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    if name not in RUNS[kind]:
        raise UsageError(
            f"{path.name} is an OpenVINO IR (.xml): only the openvino backend runs it; "
            f"use --backend openvino (or auto), or give the {name} backend the .onnx export"
        )
    reason = cls.availability()
    if reason:
        raise BackendUnavailable(f"backend {name} is not available: {reason}")
    return cls(path, options)


def _open_auto(path: Path, kind: str, options: BackendOptions) -> tuple[Backend, str]:
    skipped: list[str] = []
    for name in AUTO_ORDER:
        if name not in RUNS[kind]:
            continue
        cls = BACKENDS[name]
        reason = cls.availability()
        if reason is None:
            try:
                backend = cls(path, options)
            except BackendUnavailable as exc:
                reason = str(exc)
            else:
                why = f"first that started, on {', '.join(backend.info().providers)}"
                if kind == "ir":
                    why += " (an OpenVINO IR runs on openvino only)"
                if skipped:
                    why += "; skipped " + "; ".join(skipped)
                return backend, why
        skipped.append(f"{name}: {reason}")
    raise BackendUnavailable(f"no backend can run {path.name}: " + "; ".join(skipped))


def choose_backend(
    model_path: Path | str, backend: str = "auto", options: BackendOptions | None = None
) -> tuple[Backend, str]:
    """Open ``model_path`` on ``backend`` and say why that backend runs it.

    Returns:
        ``(backend, reason)``; the reason is ``"requested"`` for an explicit choice.

    Raises:
        UsageError: Missing or unsupported model file, unknown backend name, or a
            backend that cannot read this file kind (cpu/cuda with an ``.xml``).
        BackendUnavailable: The requested backend (or, for ``auto``, every backend)
            cannot run here; the message names the fix.
    """
    path = Path(model_path)
    options = options or BackendOptions()
    kind = model_kind(path)
    if backend == "auto":
        opened, why = _open_auto(path, kind, options)
        log.info("backend auto -> %s: %s", opened.name, why)
        return opened, why
    return _open_explicit(path, kind, backend, options), "requested"


def open_backend(
    model_path: Path | str, backend: str = "auto", options: BackendOptions | None = None
) -> Backend:
    """Open ``model_path`` on ``backend`` (``auto``, ``cuda``, ``openvino`` or ``cpu``).

    ``auto`` tries cuda (only if a session really starts on the CUDA provider),
    then openvino, then cpu, and logs its choice and why. An explicit backend that
    cannot run raises :class:`BackendUnavailable`; nothing falls back silently.
    """
    return choose_backend(model_path, backend, options)[0]
