"""``openvino`` backend: OpenVINO Runtime, for ``.onnx`` and OpenVINO IR ``.xml`` (the openvino format).

OpenVINO runs fp32 graphs in bf16 on CPUs that support it unless told
otherwise; this backend asks for f32 explicitly (bf16 only when requested) and
reports the precision read back from the compiled model.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.contract import INPUT_NAME, LOGIT, PROB, VIEW_LOGITS, VIEWS_NAME, TensorSpec
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.io.formats import import_openvino, ir_metadata, shared_core
from edgeleuk.runtime.base import (
    Backend,
    BackendInfo,
    BackendOptions,
    BenchVariant,
    ExtrasResult,
    OptionsRecord,
    ThroughputMode,
    option,
)
from edgeleuk.runtime.staged import StageChoice, run_staged
from edgeleuk.runtime.views import ov_expose_views, ov_keep_extras

log = logging.getLogger(__name__)

PRECISIONS = {"f32": "f32", "bf16": "bf16"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
_NO_BF16 = "this CPU has no avx512_bf16/amx_bf16: OpenVINO would not compute in bf16"


@dataclass(frozen=True)
class OpenVINOOptions(OptionsRecord):
    """What only the ``openvino`` backend can be asked.

    Attributes:
        precision: CPU inference precision, ``f32`` or ``bf16``.
        hint: Performance hint, ``latency`` or ``throughput``.
        device: Device name (``CPU``, ``GPU``...); None means CPU.
    """

    precision: str = option("f32", "openvino: CPU inference precision.", tuple(PRECISIONS))
    hint: str = option(
        "latency", "openvino: performance hint (throughput can help on large folders).", tuple(HINTS)
    )
    device: str | None = option(None, "openvino: device name (CPU, GPU, ...); default CPU.")


def _check_device(core: Any, device: str) -> None:
    if device.startswith(_VIRTUAL_DEVICES):
        return
    present = {d.split(".")[0] for d in core.available_devices} | set(core.available_devices)
    if device not in present:
        raise BackendUnavailable(
            f"OpenVINO device {device!r} not found; available: {', '.join(core.available_devices) or 'none'} "
            "(for an Intel GPU install its compute runtime, then check `benchmark_app -d GPU`)"
        )


def _port_specs(port: Any) -> list[TensorSpec]:
    """One :class:`TensorSpec` per name of an OpenVINO port (a port may carry several names)."""
    try:
        dtype = str(np.dtype(port.get_element_type().to_dtype()))
    except Exception:  # noqa: BLE001 - an element type numpy has no name for
        dtype = port.get_element_type().get_type_name()
    pshape = port.get_partial_shape()
    if pshape.rank.is_dynamic:
        shape: tuple[int | None, ...] = (None,)
    else:
        shape = tuple(None if d.is_dynamic else d.get_length() for d in pshape)
    return [TensorSpec(name, dtype, shape) for name in sorted(port.get_names()) or ["?"]]


def compile_config(options: OpenVINOOptions, threads: int | None = None) -> dict[str, Any]:
    """OpenVINO compile properties for this backend's ``options`` and the generic ``threads``."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": HINTS[options.hint],
        # Explicit: the CPU plugin would otherwise pick bf16 on AVX512-BF16/AMX machines.
        "INFERENCE_PRECISION_HINT": PRECISIONS[options.precision],
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVINOBackend(Backend):
    """A model compiled by OpenVINO Runtime for one device (CPU by default).

    ``auto`` tries it after cuda: on CPUs it is usually the fastest engine.
    Thread-safe: each call to :meth:`run` borrows its own ``InferRequest`` from a
    pool (creating one when all are busy), so one instance may serve many threads.
    """

    name = "openvino"
    reads = ("onnx", "openvino")
    libraries = ("openvino",)
    auto_rank = 20
    Options = OpenVINOOptions

    @classmethod
    def availability(cls) -> str | None:
        try:
            import_openvino()
        except BackendUnavailable as exc:
            return str(exc)
        return None

    @classmethod
    def bench_variants(cls, precision: str) -> tuple[BenchVariant, ...]:
        """Bf16 compute beside f32 on bf16 CPUs.

        An fp32 file is then gated as bf16; an int8 file stays gated as int8 (bf16
        only runs the layers left unquantized).
        """
        bf16 = {"precision": "bf16"}
        if precision == "fp32":
            return (BenchVariant("bf16", "bf16", bf16, needs="bf16", why_not=_NO_BF16),)
        if precision == "int8":
            return (BenchVariant("int8+bf16", None, bf16, needs="bf16", why_not=_NO_BF16),)
        return ()

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        self.model_path = Path(model_path)
        self._format = self.model_format(self.model_path)
        ov = import_openvino()
        self.options = options
        own: OpenVINOOptions = options.of(type(self))
        self.own = own
        self._version = ov.get_version().split("-")[0]
        self._core = core = shared_core()
        self.device = (own.device or "CPU").upper()
        _check_device(core, self.device)
        try:
            self._model = core.read_model(str(self.model_path))
        except Exception as exc:  # a truncated or foreign file
            raise UsageError(f"{self.model_path}: OpenVINO cannot read this model: {exc}") from exc
        self._metadata = ir_metadata(self._model)
        self._all_views: np.ndarray | None = None  # set when the views entry is open
        if options.views_input:
            self._all_views = ov_expose_views(self._model)
        # OpenVINO computes every result: the extras not asked for leave the model before compiling.
        self.extras = ov_keep_extras(self._model, options.extras)
        self._compiled = self._compile(compile_config(own, options.threads))
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._precision = self._property("INFERENCE_PRECISION_HINT")
        if self._precision != own.precision:
            log.warning("asked OpenVINO for %s but %s runs in %s", own.precision, self.device,
                        self._precision)

    def _compile(self, config: dict[str, Any]) -> Any:
        try:
            return self._core.compile_model(self._model, self.device, config)
        except Exception as exc:
            raise BackendUnavailable(
                f"OpenVINO could not compile the model for {self.device}: {exc}"
            ) from exc

    def _property(self, name: str) -> str:
        try:
            value = self._compiled.get_property(name)
        except Exception:  # noqa: BLE001 - not every device reports every property
            return "unknown"
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    def _infer(self, batch: np.ndarray, views: np.ndarray | None, names: tuple[str, ...]) -> tuple[Any, ...]:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            return _infer_on(request, batch, views, names)
        finally:
            self._requests.put(request)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probs = self._infer(batch, self._all_views, (LOGIT, PROB))
        return logits.reshape(-1), probs.reshape(-1)

    def run_views(self, batch: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._all_views is None:
            return super().run_views(batch, views)
        logits, view_logits = self._infer(batch, views, (LOGIT, VIEW_LOGITS))
        return logits.reshape(-1), view_logits

    def run_extras(self, batch: np.ndarray, names: tuple[str, ...]) -> ExtrasResult:
        self._unopened(names)
        logits, probs, *rest = self._infer(batch, self._all_views, (LOGIT, PROB, *names))
        return logits.reshape(-1), probs.reshape(-1), dict(zip(names, rest, strict=True))

    def run_views_extras(self, batch: np.ndarray, views: np.ndarray,
                         names: tuple[str, ...]) -> ExtrasResult:
        if self._all_views is None:
            return super().run_views_extras(batch, views, names)
        self._unopened(names)
        logits, view_logits, *rest = self._infer(batch, views, (LOGIT, VIEW_LOGITS, *names))
        return logits.reshape(-1), view_logits, dict(zip(names, rest, strict=True))

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def graph_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        inputs = []
        for port in self._compiled.inputs:  # one entry per input, under the contract's name if it has it
            specs = _port_specs(port)
            inputs.append(next((s for s in specs if s.name == INPUT_NAME), specs[0]))
        outputs = [spec for port in self._compiled.outputs for spec in _port_specs(port)]
        return inputs, outputs

    def info(self) -> BackendInfo:
        try:
            devices = tuple(str(d) for d in self._compiled.get_property("EXECUTION_DEVICES"))
        except Exception:  # noqa: BLE001 - plugins without the property: report what was asked
            devices = (self.device,)
        return BackendInfo(
            name=self.name,
            engine=f"openvino {self._version}",
            providers=devices,
            precision=self._precision,
            details={
                "hint": self._property("PERFORMANCE_HINT"),
                "threads": self._property("INFERENCE_NUM_THREADS"),
                "model_format": self._format.name,
            },
        )

    def throughput_mode(self, cells: np.ndarray, budget_s: float, batch: int,
                        staged: StageChoice | None = None) -> ThroughputMode | None:
        """Cells/s with the THROUGHPUT hint (several streams) fed by an ``AsyncInferQueue``, one cell each.

        Staged TTA: as many threads as the compiled model wants requests, each running
        staged cells one at a time on its own request (a cell's stage 2 depends on its
        stage 1, so the queue cannot be fed blind).
        """
        if staged is not None and self._all_views is None:
            return None
        ov = import_openvino()
        config = compile_config(replace(self.own, hint="throughput"), self.options.threads)
        compiled = self._compile(config)
        nreq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        streams = compiled.get_property("NUM_STREAMS")
        if staged is not None:
            return _staged_throughput(compiled, nreq, streams, cells, budget_s, staged)
        jobs = ov.AsyncInferQueue(compiled, nreq)
        min_cells = max(batch, 2 * nreq)
        singles = [np.ascontiguousarray(c[None]) for c in cells]
        for i in range(nreq):  # warm every request once
            jobs.start_async({0: singles[i % len(singles)]})
        jobs.wait_all()
        done, start = 0, time.perf_counter()
        while True:
            for _ in range(nreq):
                jobs.start_async({0: singles[done % len(singles)]})
                done += 1
            if done >= min_cells and time.perf_counter() - start >= budget_s:
                break
        jobs.wait_all()
        elapsed = time.perf_counter() - start
        mode = f"OpenVINO THROUGHPUT hint, {streams} streams, {nreq} async requests"
        return ThroughputMode(mode, done / elapsed, done)


def _infer_on(request: Any, batch: np.ndarray, views: np.ndarray | None, names: tuple[str, ...]) -> tuple[Any, ...]:
    """One call on ``request``: the named outputs as float32 (``views`` only with the views entry open)."""
    feed: dict[Any, np.ndarray] = {0: np.ascontiguousarray(batch)}
    if views is not None:
        feed = {INPUT_NAME: feed[0], VIEWS_NAME: np.asarray(views, np.int64)}
    result = request.infer(feed)
    return tuple(np.array(result[name], np.float32) for name in names)


def _staged_throughput(compiled: Any, nreq: int, streams: Any, cells: np.ndarray, budget_s: float,
                       choice: StageChoice) -> ThroughputMode:
    """Cells/s of staged TTA with one thread per infer request of a THROUGHPUT-compiled model (views exposed)."""

    def worker(index: int, deadline: float | None) -> int:
        request = compiled.create_infer_request()

        def run_views(batch: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            logits, view_logits = _infer_on(request, batch, views, (LOGIT, VIEW_LOGITS))
            return logits.reshape(-1), view_logits

        done, i = 0, index
        while True:  # OpenVINO releases the GIL while a request runs: the threads overlap
            run_staged(run_views, np.ascontiguousarray(cells[i % len(cells)][None]), choice)
            done, i = done + 1, i + nreq
            if deadline is None or (time.perf_counter() >= deadline and done >= 2):
                return done

    with ThreadPoolExecutor(nreq) as pool:
        list(pool.map(lambda k: worker(k, None), range(nreq)))  # warm every request once
        start = time.perf_counter()
        done = sum(pool.map(lambda k: worker(k, start + budget_s), range(nreq)))
        elapsed = time.perf_counter() - start
    mode = f"OpenVINO THROUGHPUT hint, {streams} streams, {nreq} threads of staged cells"
    return ThroughputMode(mode, done / elapsed, done)
