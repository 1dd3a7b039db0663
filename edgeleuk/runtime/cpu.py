"""``cpu`` backend: ONNX Runtime with the CPUExecutionProvider."""

from __future__ import annotations

from typing import Any

from edgeleuk.errors import BackendUnavailable
from edgeleuk.runtime.base import BackendOptions
from edgeleuk.runtime.ort_common import OrtBackend, import_ort


class CpuBackend(OrtBackend):
    """An exported ``.onnx`` on ONNX Runtime's CPU provider (either wheel ships it)."""

    name = "cpu"

    @classmethod
    def availability(cls) -> str | None:
        try:
            ort = import_ort()
        except BackendUnavailable as exc:
            return str(exc)
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return f"this onnxruntime build lacks CPUExecutionProvider ({ort.get_available_providers()})"
        return None

    def _providers(self, ort: Any, options: BackendOptions) -> list[Any]:
        return ["CPUExecutionProvider"]
