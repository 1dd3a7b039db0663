"""The one small interface every inference backend implements (torch-free)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.contract import TensorSpec


@dataclass(frozen=True)
class BackendOptions:
    """What the user asked of a backend.

    Attributes:
        threads: Intra-op threads; None leaves the backend's default.
        precision: OpenVINO CPU inference precision, ``f32`` or ``bf16``.
        device: OpenVINO device name (``CPU``, ``GPU``...); None means CPU.
        hint: ``latency`` or ``throughput`` (OpenVINO performance hint).
        tensorrt: Put ONNX Runtime's TensorRT provider first on cuda when present.
    """

    threads: int | None = None
    precision: str = "f32"
    device: str | None = None
    hint: str = "latency"
    tensorrt: bool = False


@dataclass(frozen=True)
class BackendInfo:
    """What actually runs, read back from the engine after loading.

    Attributes:
        name: Backend key (``cuda``, ``openvino``, ``cpu``).
        engine: Library and version, e.g. ``onnxruntime 1.20.1``.
        providers: Providers or execution devices in use, as the engine reports them.
        precision: Inference precision in effect.
        details: Anything else worth printing (threads, hint, reason for auto choice).
    """

    name: str
    engine: str
    providers: tuple[str, ...]
    precision: str
    details: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """A loaded model on one engine: uint8 [N, 450, 450, 3] RGB in, logits and probabilities out."""

    name: str = "?"

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> str | None:
        """None when this backend can run here, else why not and the fix."""

    @abc.abstractmethod
    def __init__(self, model_path: Path, options: BackendOptions) -> None: ...

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch.

        Args:
            batch: uint8 array [N, H, W, 3], RGB, H and W as in the model's contract.

        Returns:
            ``(logits, probs)``, each float32 [N].
        """

    @abc.abstractmethod
    def info(self) -> BackendInfo:
        """What actually runs (providers/devices read back after loading)."""

    def metadata(self) -> dict[str, str]:
        """String metadata stored in the loaded model file (ONNX metadata_props, IR rt_info).

        Lets callers read ``edgeleuk.meta`` without parsing a large model a second time.
        """
        return {}

    def graph_io(self) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
        """``(inputs, outputs)`` of the loaded graph as the engine reports them.

        :class:`edgeleuk.runtime.classifier.Classifier` checks them against
        :mod:`edgeleuk.contract` before any image is read. None: this backend cannot say.
        """
        return None
