"""Each engine's own throughput mode, beside the plain synchronous batches.

* OpenVINO: the THROUGHPUT performance hint (several CPU streams) fed by an
  ``AsyncInferQueue`` with the plugin's optimal number of requests, one cell per request.
* ONNX Runtime CUDA: IO binding, input already on the GPU and outputs left there,
  so the figure is the GPU's, without host copies per batch.

ONNX Runtime CPU and torch have no separate mode: their best plain batch is it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.runtime.base import BackendOptions
from edgeleuk.runtime.openvino import compile_config
from edgeleuk.runtime.ort_common import session_options


@dataclass(frozen=True)
class ModeResult:
    """Throughput in an engine's throughput mode.

    Attributes:
        mode: What ran, e.g. ``OpenVINO THROUGHPUT hint, 2 async requests``.
        cells_per_s: Cells per second.
        cells: Cells processed while timing.
    """

    mode: str
    cells_per_s: float
    cells: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def openvino_async(
    model: Path, cells: np.ndarray, options: BackendOptions, budget_s: float, min_cells: int,
) -> ModeResult:
    """Cells/s with the THROUGHPUT hint and an ``AsyncInferQueue``."""
    import openvino as ov  # lazy: each bench worker process loads only its own engine

    core = ov.Core()
    config = compile_config(BackendOptions(threads=options.threads, precision=options.precision,
                                           hint="throughput"))
    compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
    nreq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    streams = compiled.get_property("NUM_STREAMS")
    queue = ov.AsyncInferQueue(compiled, nreq)
    min_cells = max(min_cells, 2 * nreq)
    singles = [np.ascontiguousarray(c[None]) for c in cells]
    for i in range(nreq):  # warm every request once
        queue.start_async({0: singles[i % len(singles)]})
    queue.wait_all()
    done, start = 0, time.perf_counter()
    while True:
        for _ in range(nreq):
            queue.start_async({0: singles[done % len(singles)]})
            done += 1
        elapsed = time.perf_counter() - start
        if done >= min_cells and elapsed >= budget_s:
            break
    queue.wait_all()
    elapsed = time.perf_counter() - start
    return ModeResult(f"OpenVINO THROUGHPUT hint, {streams} streams, {nreq} async requests", done / elapsed, done)


def cuda_io_binding(model: Path, cells: np.ndarray, options: BackendOptions, budget_s: float, batch: int) -> ModeResult:
    """Cells/s on ONNX Runtime CUDA with the batch bound on the device (no host copies)."""
    import onnxruntime as ort  # lazy: each bench worker process loads only its own engine

    session = ort.InferenceSession(str(model), session_options(ort, options),
                                   providers=["CUDAExecutionProvider"])
    idx = np.arange(batch) % len(cells)
    x = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(cells[idx]), "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, x)
    for name in ("logit", "prob"):
        binding.bind_output(name, "cuda")
    session.run_with_iobinding(binding)  # warm-up: CUDA graphs, cuDNN algorithm search
    done, start = 0, time.perf_counter()
    while True:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        done += batch
        elapsed = time.perf_counter() - start
        if done >= 2 * batch and elapsed >= budget_s:
            return ModeResult(f"ONNX Runtime CUDA IO binding, batch {batch}", done / elapsed, done)


def throughput_mode(
    backend: str, model: Path, cells: np.ndarray, options: BackendOptions, budget_s: float, batch: int,
) -> ModeResult | None:
    """The engine's throughput mode for a row, or None when it has none."""
    if backend == "openvino":
        return openvino_async(model, cells, options, budget_s, min_cells=batch)
    if backend == "cuda":
        return cuda_io_binding(model, cells, options, budget_s, batch)
    return None
