"""``cuda`` backend: ONNX Runtime with the CUDAExecutionProvider (TensorRT first with ``--tensorrt``).

ONNX Runtime quietly runs on the CPU when the CUDA provider cannot start (a
missing cuDNN, no visible GPU). This backend reads the providers back from the
session and refuses to pretend: it raises :class:`BackendUnavailable` with the
engine's own warning as the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeleuk.core.contract import OUTPUT_NAMES
from edgeleuk.core.errors import BackendUnavailable
from edgeleuk.runtime.base import OptionsRecord, ThroughputMode, option
from edgeleuk.runtime.ort_common import (
    CPU_DIST,
    GPU_DIST,
    OrtBackend,
    import_ort,
    installed_ort_distributions,
)

if TYPE_CHECKING:
    from edgeleuk.runtime.staged import StageChoice

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_REASON_WORDS = ("cuda", "cudnn", "cublas", "gpu", "provider", "error", "fail")


@contextlib.contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 (ORT's C++ warnings), then write it out again."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            if text:
                sys.stderr.write(text)  # nothing is hidden from the user
            lines.extend(text.splitlines())


def _why(lines: list[str]) -> str:
    hits = [ln.strip() for ln in lines if any(w in ln.lower() for w in _REASON_WORDS)]
    if hits:
        return " | ".join(hits[-3:])
    return (
        "no error was reported; usually the CUDA 12 / cuDNN 9 libraries are not on the library path "
        "or no GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    )


@dataclass(frozen=True)
class CudaOptions(OptionsRecord):
    """What only the ``cuda`` backend can be asked.

    Attributes:
        tensorrt: Put ONNX Runtime's TensorRT provider before CUDA when the wheel has it
            (a warning, and plain CUDA, when it does not).
    """

    tensorrt: bool = option(False, "cuda: try ONNX Runtime's TensorRT provider before CUDA.")


class CudaBackend(OrtBackend):
    """An exported ``.onnx`` on an NVIDIA GPU through ONNX Runtime; ``auto`` tries it first."""

    name = "cuda"
    device = "gpu"  # --cluster gives each worker a GPU; auto gives GPU install advice only where one is seen
    auto_rank = 10
    Options = CudaOptions

    @classmethod
    def availability(cls) -> str | None:
        wheels = installed_ort_distributions()
        if GPU_DIST not in wheels:
            fix = "pip install 'edgeleuk[gpu]'"
            if CPU_DIST in wheels:
                fix = f"pip uninstall -y {CPU_DIST} && {fix}"
            return f"{GPU_DIST} is not installed: {fix}"
        if CPU_DIST in wheels:
            return (
                f"both {CPU_DIST} and {GPU_DIST} are installed: uninstall {CPU_DIST} "
                f"(they share one module and the CPU build wins): "
                f"pip uninstall -y {CPU_DIST} {GPU_DIST} && pip install 'edgeleuk[gpu]'"
            )
        try:
            ort = import_ort()
        except BackendUnavailable as exc:
            return str(exc)
        if CUDA not in ort.get_available_providers():
            return (
                f"{GPU_DIST} offers no {CUDA} (it has {ort.get_available_providers()}): reinstall {GPU_DIST}"
            )
        return None

    def _providers(self, ort: Any, options: CudaOptions) -> list[Any]:
        providers: list[Any] = [CUDA, "CPUExecutionProvider"]
        if options.tensorrt:
            if TENSORRT in ort.get_available_providers():
                providers.insert(0, TENSORRT)
            else:
                log.warning(
                    "TensorRT was asked for but this onnxruntime-gpu build has no %s; using CUDA", TENSORRT
                )
        return providers

    def _create_session(self, ort: Any, so: Any, providers: list[Any]) -> Any:
        with _stderr_lines() as lines:
            try:
                session = super()._create_session(ort, so, providers)
            except Exception as exc:
                raise BackendUnavailable(f"{CUDA} did not start: {exc}") from exc
        self._load_log = lines
        return session

    def _check_session(self, session: Any) -> None:
        in_use = session.get_providers()
        if CUDA not in in_use:
            raise BackendUnavailable(
                f"{CUDA} did not start (session runs on {in_use}): {_why(self._load_log)}"
            )

    def throughput_mode(self, cells: np.ndarray, budget_s: float, batch: int,
                        staged: StageChoice | None = None) -> ThroughputMode | None:
        """Cells/s with the batch bound on the GPU (IO binding): the GPU's figure, no host copies.

        Staged TTA has no IO-bound mode here (its second stage depends on the first's
        answer on the host): None for it.
        """
        if staged is not None:
            return None
        idx = np.arange(batch) % len(cells)
        x = self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(cells[idx]), "cuda", 0)
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(self._input, x)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cuda")
        self._session.run_with_iobinding(binding)  # warm-up: cuDNN algorithm search
        done, start = 0, time.perf_counter()
        while True:
            self._session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            done += batch
            elapsed = time.perf_counter() - start
            if done >= 2 * batch and elapsed >= budget_s:
                return ThroughputMode(f"ONNX Runtime CUDA IO binding, batch {batch}", done / elapsed, done)
