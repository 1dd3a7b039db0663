"""``cuda`` backend: ONNX Runtime with the CUDAExecutionProvider (TensorRT first with ``--tensorrt``).

ONNX Runtime quietly runs on the CPU when the CUDA provider cannot start (a
missing cuDNN, no visible GPU), and on plain CUDA when TensorRT cannot. This
backend reads the providers back from the session and refuses to pretend: it
raises :class:`BackendUnavailable` with the engine's own warning as the reason.

Settings (:data:`CUDA_OPTIONS`, :func:`tensorrt_options`): no TF32, so an fp32 file computes in fp32 as
gated; TensorRT in fp16 for an fp16 file, one engine for batches 1 to 64, cached on
disk. ``onnxruntime.preload_dlls()`` loads CUDA and cuDNN from pip wheels, which the
runtime needs because it never imports torch (which would load them).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeleuk.core.contract import CHANNELS, INPUT_NAME, OUTPUT_NAMES, VIEWS_NAME
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.io.modelfile import read_model_meta
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
CPU = "CPUExecutionProvider"
_REASON_WORDS = ("cuda", "cudnn", "cublas", "tensorrt", "libnv", "gpu", "provider", "error", "fail")

#: CUDA provider options. TF32 off: on Ampere and later it rounds fp32 Conv/MatMul inputs to a
#: 10-bit mantissa (about 1e-3 relative error), and an fp32 file is gated at |dlogit| <= 1e-4.
CUDA_OPTIONS = {"use_tf32": "0"}
#: Batch sizes of TensorRT's one shape profile: (min, opt, max). Without a profile TensorRT
#: builds a new engine for every new batch size; a batch above max is outside this engine.
TRT_BATCHES = (1, 8, 64)


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


def cuda_build(ort: Any) -> str:
    """The CUDA version this onnxruntime was built for (``13.0``), or ``?`` when it does not say."""
    version = getattr(ort, "cuda_version", None)  # onnxruntime/__init__.py sets it from the build info
    if not version:
        with contextlib.suppress(Exception):
            from onnxruntime.capi import build_and_package_info  # GPU builds carry it (older versions too)

            version = getattr(build_and_package_info, "cuda_version", None)
    return str(version or "?")


def _why(lines: list[str], ort: Any) -> str:
    hits = [ln.strip() for ln in lines if any(w in ln.lower() for w in _REASON_WORDS)]
    if hits:
        return " | ".join(hits[-3:])
    return (
        f"no error was reported; usually the CUDA {cuda_build(ort)} / cuDNN 9 libraries this onnxruntime "
        "was built for are not on the library path (pip install 'onnxruntime-gpu[cuda,cudnn]') "
        "or no GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    )


@functools.cache
def preload_cuda_libraries(ort: Any) -> str:
    """Call ``ort.preload_dlls()`` once per process where the wheel has it (1.21 on); return what it printed.

    CUDA and cuDNN installed as pip wheels are found only by it (or by importing torch first,
    which the runtime never does). It prints what it could not load; that goes to the log.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # predict's and info's stdout carry their own output only
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - a failed preload shows as the provider not starting
            print(f"preload_dlls failed: {exc}")
    text = out.getvalue().strip()
    if text:
        log.info("onnxruntime.preload_dlls(): %s", text)
    return text


def tensorrt_cache_dir() -> Path:
    """Where TensorRT engines are kept between runs: ``$XDG_CACHE_HOME/edgeleuk/tensorrt`` (or ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeleuk" / "tensorrt"


def tensorrt_options(model_path: Path, views_input: bool) -> dict[str, str]:
    """TensorRT provider options for the model at ``model_path``.

    fp16 for an fp16 file; one engine for :data:`TRT_BATCHES` (and 1 to all rotations when the
    ``views`` entry is open), built once and kept in :func:`tensorrt_cache_dir` (ONNX Runtime
    names each cached engine after a hash of the model's graph, so one folder serves every model).

    Raises:
        BackendUnavailable: The cache folder cannot be made.
    """
    meta, export = read_model_meta(model_path)
    size, rotations = meta.preprocess.input_size, meta.preprocess.rotations

    def shapes(batch: int, views: int) -> str:
        spec = f"{INPUT_NAME}:{batch}x{size}x{size}x{CHANNELS}"
        return spec + (f",{VIEWS_NAME}:{views}" if views_input else "")

    low, opt, high = TRT_BATCHES
    cache = tensorrt_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendUnavailable(f"--tensorrt: cannot make the engine cache {cache}: {exc}; "
                                 "set XDG_CACHE_HOME to a writable folder") from exc
    return {
        "trt_fp16_enable": str(export.get("precision") == "fp16"),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": shapes(low, 1),
        "trt_profile_opt_shapes": shapes(opt, rotations),
        "trt_profile_max_shapes": shapes(high, rotations),
    }


def _no_cuda(ort: Any) -> str:
    """Why the imported onnxruntime offers no CUDA provider, and the fix."""
    wheels = installed_ort_distributions()
    here = f"onnxruntime {ort.__version__} here has no {CUDA}, only {list(ort.get_available_providers())}"
    if CPU_DIST in wheels and GPU_DIST in wheels:
        return (f"both {CPU_DIST} and {GPU_DIST} are installed: uninstall {CPU_DIST} (they share one module "
                f"and the CPU build won: {here}): pip uninstall -y {CPU_DIST} {GPU_DIST} && "
                "pip install 'edgeleuk[gpu]'")
    if GPU_DIST in wheels:
        return f"{here}; reinstall it: pip uninstall -y {GPU_DIST} && pip install 'edgeleuk[gpu]'"
    fix = "pip install 'edgeleuk[gpu]'"
    if CPU_DIST in wheels:
        fix = f"pip uninstall -y {CPU_DIST} && {fix}"
    return f"{GPU_DIST} is not installed ({here}): {fix}"


@dataclass(frozen=True)
class CudaOptions(OptionsRecord):
    """What only the ``cuda`` backend can be asked.

    Attributes:
        tensorrt: Put ONNX Runtime's TensorRT provider before CUDA; an error when TensorRT
            does not start (never a quiet CUDA run).
    """

    tensorrt: bool = option(False, "cuda: run on ONNX Runtime's TensorRT provider (CUDA for what it cannot).")


class CudaBackend(OrtBackend):
    """An exported ``.onnx`` on an NVIDIA GPU through ONNX Runtime; ``auto`` tries it first."""

    name = "cuda"
    device = "gpu"  # --cluster gives each worker a GPU; auto gives GPU install advice only where one is seen
    auto_rank = 10
    Options = CudaOptions

    @classmethod
    def availability(cls) -> str | None:
        # Decided by the module's providers, not the wheel's name: a CUDA build installed as
        # "onnxruntime" (conda-forge, a source build) runs, a CPU build named anything does not.
        try:
            ort = import_ort()
        except BackendUnavailable as exc:
            return str(exc)
        return None if CUDA in ort.get_available_providers() else _no_cuda(ort)

    def _providers(self, ort: Any, options: CudaOptions) -> list[Any]:
        providers: list[Any] = [(CUDA, dict(CUDA_OPTIONS)), CPU]
        if options.tensorrt:
            if TENSORRT not in ort.get_available_providers():
                raise BackendUnavailable(
                    f"--tensorrt: this onnxruntime {ort.__version__} has no {TENSORRT} "
                    f"(it has {list(ort.get_available_providers())}); install a build with TensorRT, "
                    "or drop --tensorrt to run on CUDA"
                )
            providers.insert(0, (TENSORRT, tensorrt_options(self.model_path, self.options.views_input)))
        return providers

    def _create_session(self, ort: Any, so: Any, providers: list[Any]) -> Any:
        self._asked = [p[0] if isinstance(p, tuple) else p for p in providers]  # names; options stripped
        preload_cuda_libraries(ort)
        with _stderr_lines() as lines:
            try:
                session = super()._create_session(ort, so, providers)
            except UsageError:
                raise  # the file is at fault (unreadable, not a model), not the GPU
            except Exception as exc:
                gpu = " / ".join(n for n in self._asked if n != CPU) or CUDA
                raise BackendUnavailable(f"{gpu} did not start: {exc}") from exc
        self._load_log = lines
        return session

    def _check_session(self, session: Any) -> None:
        in_use = session.get_providers()
        if CUDA not in in_use:
            raise BackendUnavailable(
                f"{CUDA} did not start (session runs on {in_use}): {_why(self._load_log, self._ort)}"
            )
        if TENSORRT in self._asked and TENSORRT not in in_use:
            # Every onnxruntime-gpu wheel lists TensorRT; without TensorRT's libraries it falls to CUDA.
            raise BackendUnavailable(
                f"--tensorrt: {TENSORRT} did not start (session runs on {in_use}): "
                f"{_why(self._load_log, self._ort)}; install TensorRT for this onnxruntime "
                "(pip install tensorrt), or drop --tensorrt to run on CUDA"
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
