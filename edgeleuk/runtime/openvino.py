"""``openvino`` backend: OpenVINO Runtime, for ``.onnx`` and OpenVINO IR ``.xml``.

OpenVINO runs fp32 graphs in bf16 on CPUs that support it unless told
otherwise; this backend asks for f32 explicitly (bf16 only when requested) and
reports the precision read back from the compiled model.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.contract import INPUT_NAME, LOGIT, PROB, TensorSpec
from edgeleuk.errors import BackendUnavailable, UsageError
from edgeleuk.runtime.base import Backend, BackendInfo, BackendOptions
from edgeleuk.runtime.modelfile import ir_metadata, model_kind

log = logging.getLogger(__name__)

PRECISIONS = {"f32": "f32", "bf16": "bf16"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def _import_openvino() -> Any:
    try:
        import openvino  # lazy: importing edgeleuk.runtime loads no engine (runtime/__init__)
    except ImportError as exc:
        raise BackendUnavailable("openvino is not installed: pip install openvino") from exc
    return openvino


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


def compile_config(options: BackendOptions) -> dict[str, Any]:
    """OpenVINO compile properties for ``options``.

    Raises:
        UsageError: Unknown precision or hint.
    """
    if options.precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {sorted(PRECISIONS)}, got {options.precision!r}")
    if options.hint not in HINTS:
        raise UsageError(f"hint must be one of {sorted(HINTS)}, got {options.hint!r}")
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": HINTS[options.hint],
        # Explicit: the CPU plugin would otherwise pick bf16 on AVX512-BF16/AMX machines.
        "INFERENCE_PRECISION_HINT": PRECISIONS[options.precision],
    }
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = int(options.threads)
    return config


class OpenVINOBackend(Backend):
    """A model compiled by OpenVINO Runtime for one device (CPU by default).

    Thread-safe: each call to :meth:`run` borrows its own ``InferRequest`` from a
    pool (creating one when all are busy), so one instance may serve many threads.
    """

    name = "openvino"

    @classmethod
    def availability(cls) -> str | None:
        try:
            _import_openvino()
        except BackendUnavailable as exc:
            return str(exc)
        return None

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        self.model_path = Path(model_path)
        model_kind(self.model_path)
        ov = _import_openvino()
        self.options = options
        self._version = ov.get_version().split("-")[0]
        core = ov.Core()
        self.device = (options.device or "CPU").upper()
        _check_device(core, self.device)
        config = compile_config(options)
        try:
            model = core.read_model(str(self.model_path))
        except Exception as exc:  # a truncated or foreign file
            raise UsageError(f"{self.model_path}: OpenVINO cannot read this model: {exc}") from exc
        self._metadata = ir_metadata(model)
        try:
            self._compiled = core.compile_model(model, self.device, config)
        except Exception as exc:
            raise BackendUnavailable(
                f"OpenVINO could not compile the model for {self.device}: {exc}"
            ) from exc
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._precision = self._property("INFERENCE_PRECISION_HINT")
        if self._precision != options.precision:
            log.warning(
                "asked OpenVINO for %s but %s runs in %s", options.precision, self.device, self._precision
            )

    def _property(self, name: str) -> str:
        try:
            value = self._compiled.get_property(name)
        except Exception:  # noqa: BLE001 - not every device reports every property
            return "unknown"
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            result = request.infer({0: np.ascontiguousarray(batch)})
            logits = np.array(result[LOGIT], np.float32).reshape(-1)
            probs = np.array(result[PROB], np.float32).reshape(-1)
        finally:
            self._requests.put(request)
        return logits, probs

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
                "model_format": model_kind(self.model_path),
            },
        )
