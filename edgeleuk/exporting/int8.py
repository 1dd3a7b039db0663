"""INT8 OpenVINO IR by NNCF post-training quantization of the float32 graph.

The float32 ONNX (preprocessing and TTA inside) is read by OpenVINO and
quantized with ``nncf.quantize`` on uint8 calibration images fed exactly as the
deployed model receives them; the gather, cast and normalisation stay as they
are and the convolutions become INT8. NNCF is imported only here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from edgeleuk.errors import EdgeleukError
from edgeleuk.exporting.calib import ImageSet
from edgeleuk.exporting.profile import ExportProfile

log = logging.getLogger(__name__)
_AUTO_NAME = re.compile(r"^[A-Za-z]+_\d+$")  # OpenVINO's counter-based default names


def quantize_onnx(onnx_path: Path, calib: ImageSet, profile: ExportProfile) -> Any:
    """Quantize a float32 ONNX file into an INT8 ``openvino.Model``.

    Args:
        onnx_path: The float32 export (same contract as every edgeleuk model).
        calib: Calibration images, one per NNCF sample.
        profile: Supplies the NNCF preset.

    Raises:
        EdgeleukError: NNCF is missing or quantization failed.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise EdgeleukError(f"INT8 export needs NNCF and OpenVINO: pip install 'edgeleuk[train]' ({exc})") from exc
    model = ov.Core().read_model(str(onnx_path))
    # Batch 1 per sample, uint8 as deployed: calibration sees what inference sees.
    dataset = nncf.Dataset([img[None] for img in calib.images])
    log.info("NNCF: quantizing on %d calibration images (%s)", len(calib), calib.source)
    try:
        return nncf.quantize(
            model, dataset, preset=nncf.QuantizationPreset(profile.int8_preset), subset_size=len(calib),
            target_device=nncf.TargetDevice.CPU,
        )
    except Exception as exc:  # NNCF raises assorted types; keep the cause
        raise EdgeleukError(f"NNCF quantization failed: {exc}") from exc


def stabilise_names(model: Any) -> None:
    """Give unnamed nodes names from their position in the graph.

    OpenVINO names unnamed nodes from a process-wide counter (``Constant_24296``),
    so the same export done twice in one process would write different ``.xml``.
    Names are cosmetic: inputs and outputs are found by their tensor names.
    """
    for i, op in enumerate(model.get_ordered_ops()):
        if op.get_type_name() not in ("Parameter", "Result") and _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}.{i}")


def save_ir(model: Any, xml_path: Path) -> None:
    """Write ``model`` as IR (``.xml`` + ``.bin`` beside it), weights uncompressed, names stable."""
    import openvino as ov

    stabilise_names(model)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
