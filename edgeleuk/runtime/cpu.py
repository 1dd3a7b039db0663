"""``cpu`` backend: ONNX Runtime with the CPUExecutionProvider."""

from __future__ import annotations

from typing import Any

from edgeleuk.core.errors import BackendUnavailable
from edgeleuk.runtime.ort_common import OrtBackend, import_ort


class CpuBackend(OrtBackend):
    """An exported ``.onnx`` on ONNX Runtime's CPU provider (either wheel ships it).

    ``auto`` tries it last: it always starts, and the others are faster where they run.
    """

    name = "cpu"
    auto_rank = 30

    @classmethod
    def availability(cls) -> str | None:
        try:
            ort = import_ort()
        except BackendUnavailable as exc:
            return str(exc)
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return f"this onnxruntime build lacks CPUExecutionProvider ({ort.get_available_providers()})"
        return None

    def _providers(self, ort: Any, options: Any) -> list[Any]:
        return ["CPUExecutionProvider"]
