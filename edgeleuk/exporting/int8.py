"""INT8 OpenVINO IR by NNCF post-training quantization of the float32 graph.

The float32 ONNX (preprocessing and TTA inside) is read by OpenVINO and
quantized on uint8 calibration images fed exactly as the deployed model receives
them, one image (eight views) per NNCF sample; the gather, cast and
normalisation stay as they are and the convolutions become INT8. With labelled
gate cells and ``accuracy_control`` on, :mod:`edgeleuk.exporting.int8_accuracy`
runs NNCF's accuracy-controlled variant; otherwise plain ``nncf.quantize`` runs.
Either way a record of what ran goes into the model file. NNCF is imported only
here and there.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from edgeleuk.core.contract import LOGIT
from edgeleuk.core.errors import EdgeleukError
from edgeleuk.exporting.gate import ReferenceOutputs
from edgeleuk.exporting.imagesets import ImageSet
from edgeleuk.exporting.int8_accuracy import quantize_with_f1_control
from edgeleuk.exporting.profile import ExportProfile
from edgeleuk.io.formats import import_openvino
from edgeleuk.runtime.altstack import kept_signal_stack

log = logging.getLogger(__name__)
_AUTO_NAME = re.compile(r"^[A-Za-z]+_\d+$")  # OpenVINO's counter-based default names
_WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")
_PASS_THROUGH = ("Convert", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Multiply", "Subtract")


def _import_nncf() -> Any:
    try:
        import nncf  # lazy: many seconds to import, and only INT8 profiles need it
    except ImportError as exc:
        raise EdgeleukError(f"INT8 export needs NNCF and OpenVINO: pip install 'edgeleuk[train]' ({exc})") from exc
    return nncf


#: The class activation map's nodes (exported under the ``cam`` module scope, edgeleuk.modeling.tta).
CAM_NODES = r"^/cam/.*"


def float_tail(nncf: Any) -> Any:
    """NNCF's ignored scope for the rotation mean and the class activation map.

    The ``logit`` mean must see the exact view logits: NNCF would otherwise put a FakeQuantize
    on the mean's input, so the file's ``logit`` would average 256-level copies of the
    ``view_logits`` it also outputs, and staged TTA (which sums the ``view_logits``) could not
    reproduce the file's full result. The map's product of the last feature map with the
    linear weights stays float too (a heatmap, not a speed path); the ``embedding`` is a mean
    of the pooled features, which NNCF leaves alone.
    """
    return nncf.IgnoredScope(names=[LOGIT], patterns=[CAM_NODES], validate=False)


def quantize_onnx(onnx_path: Path, quant: ImageSet, profile: ExportProfile, gate: ImageSet,
                  ref: ReferenceOutputs) -> tuple[Any, dict[str, Any]]:
    """Quantize a float32 ONNX file into an INT8 ``openvino.Model``.

    Args:
        onnx_path: The float32 export (same contract as every edgeleuk model).
        quant: INT8 calibration images (NNCF's statistics), one per NNCF sample.
        profile: Supplies the NNCF preset and the accuracy-control settings.
        gate: The gate cells; their labels, if any, drive accuracy control.
        ref: The PyTorch reference's outputs on ``gate``.

    Returns:
        The quantized model, and the record of how it was made (stored in the file).

    Raises:
        EdgeleukError: NNCF is missing or quantization failed.
    """
    nncf = _import_nncf()
    model = import_openvino().Core().read_model(str(onnx_path))
    # Batch 1 per sample, uint8 as deployed: calibration sees what inference sees.
    dataset = nncf.Dataset([img[None] for img in quant.images])
    record: dict[str, Any] = {"calibration": quant.source, "calibration_images": len(quant),
                              "preset": profile.int8_preset, "nncf_version": nncf.__version__}
    log.info("NNCF: quantizing on %d calibration images (%s)", len(quant), quant.source)
    # NNCF compiles on Cores of its own, whose release can leave this thread's signal stack unmapped.
    with kept_signal_stack():
        try:
            if profile.accuracy_control and gate.labels is not None:
                quantized, controlled = quantize_with_f1_control(model, dataset, len(quant), gate, ref, profile,
                                                                 ignored_scope=float_tail(nncf))
                record.update(controlled)
            else:
                quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset(profile.int8_preset),
                                          subset_size=len(quant), target_device=nncf.TargetDevice.CPU,
                                          ignored_scope=float_tail(nncf))
                why = "no labels" if profile.accuracy_control else "off in the profile"
                record.update(method="nncf.quantize", accuracy_control=f"off ({why})")
                log.info("NNCF: accuracy control off (%s)", why)
        except EdgeleukError:
            raise
        except Exception as exc:  # NNCF raises assorted types; keep the cause
            raise EdgeleukError(f"NNCF quantization failed: {exc}") from exc
    in_float, total = float_layers(quantized)
    record["layers_in_float"] = f"{in_float} of {total}"
    return quantized, record


def _int8_weights(node: Any, depth: int = 4) -> bool:
    # INT8 weights reach a layer as Constant -> FakeQuantize, or (as NNCF saves them) as an
    # int8 Constant -> Convert -> Subtract/Multiply, possibly through a Reshape.
    kind = node.get_type_name()
    if kind == "FakeQuantize" or (kind == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8")):
        return True
    if depth == 0 or kind not in _PASS_THROUGH:
        return False
    return any(_int8_weights(inp.get_source_output().get_node(), depth - 1) for inp in node.inputs())


def float_layers(model: Any) -> tuple[int, int]:
    """How many weighted layers (convolutions, matmuls) run without INT8 weights, of how many."""
    weighted = [op for op in model.get_ordered_ops() if op.get_type_name() in _WEIGHTED]
    in_float = sum(not _int8_weights(op.input_value(1).get_node()) for op in weighted)
    return in_float, len(weighted)


def describe_quantization(record: dict[str, Any]) -> str:
    """One or two lines for people: which NNCF method ran and what accuracy control did."""
    head = (f"INT8: {record['method']} on {record['calibration_images']} calibration cells, "
            f"{record['layers_in_float']} weighted layers left in float")
    if record["accuracy_control"] != "on":
        return f"{head}\n  accuracy control: {record['accuracy_control']}"
    flt, full = record["float"], record["fully_quantized"]
    if flt is None:
        cells = record["validation_cells"]
        return f"{head}\n  accuracy control on {cells} labelled gate cells: {record['restoration']}"
    return (f"{head}\n  accuracy control on {record['validation_cells']} labelled gate cells: float weighted F1 "
            f"{flt['f1']:.4f}; fully INT8 F1 {full['f1']:.4f}, agreement {100 * full['agreement']:.2f} % "
            f"-> {record['restoration']}")


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
    stabilise_names(model)
    import_openvino().save_model(model, str(xml_path), compress_to_fp16=False)
