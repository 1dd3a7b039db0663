"""Thin runners for the parity gate: the exported file on ONNX Runtime or OpenVINO.

The gate talks to the engines directly (not through ``edgeleuk.runtime``) so that
export stays checkable on its own; both run the file exactly as written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeleuk.contract import INPUT_NAME, OUTPUT_NAMES


class Engine:
    """A model file loaded on one engine.

    Attributes:
        name: Engine key from the profile (``onnxruntime``, ``onnxruntime-cuda``, ``openvino``).
        version: Library and version, recorded in the gate report.
    """

    name = "?"
    version = "?"

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, H, W, 3] -> (logits, probs) as the engine returns them."""
        raise NotImplementedError


class OrtEngine(Engine):
    """ONNX Runtime with one execution provider (CPU or CUDA), default graph optimisations."""

    def __init__(self, path: Path, cuda: bool = False) -> None:
        import onnxruntime as ort

        self.name = "onnxruntime-cuda" if cuda else "onnxruntime"
        self.version = f"onnxruntime {ort.__version__}"
        provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
        self.session = ort.InferenceSession(str(path), providers=[provider])
        if self.session.get_providers()[0] != provider:  # ORT falls back silently otherwise
            raise RuntimeError(f"{provider} did not load (got {self.session.get_providers()})")

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit, prob = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return logit, prob


class OpenVinoEngine(Engine):
    """OpenVINO CPU at f32 inference precision (the CPU plugin may default to bf16 otherwise)."""

    def __init__(self, path: Path) -> None:
        import openvino as ov

        self.name = "openvino"
        self.version = f"openvino {ov.get_version().split('-')[0]}"
        core = ov.Core()
        self.compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.compiled(images)
        return result["logit"], result["prob"]


def unavailable(name: str) -> str | None:
    """Why engine ``name`` cannot run here (recorded as ``skipped: ...``), or None."""
    try:
        if name.startswith("onnxruntime"):
            import onnxruntime as ort

            if name == "onnxruntime-cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
                return "no CUDA (onnxruntime-gpu with a CUDA device is needed)"
        else:
            import openvino  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed"
    return None


def open_engine(name: str, path: Path) -> Engine:
    """Load ``path`` on engine ``name``; check :func:`unavailable` first."""
    if name == "openvino":
        return OpenVinoEngine(path)
    return OrtEngine(path, cuda=name == "onnxruntime-cuda")
