"""Export a checkpoint to one deployable model file, through a parity gate.

``export_model(ckpt, out, profile, data)`` folds preprocessing and rotation TTA
into the graph (:mod:`edgeleuk.modeling.tta`), writes ONNX (float32 or float16) or an
INT8 OpenVINO IR, gates it against the eager PyTorch reference
(:mod:`edgeleuk.modeling.reference`) and only then renames it into place.

Modules: ``profile`` (TOML profiles), ``graph`` (torch -> ONNX, checker and
contract), ``gate`` (parity gate on the runtime backends), ``imagesets`` (gate and
INT8 quantization images), ``int8`` (NNCF) with ``int8_accuracy`` (F1 accuracy
control), ``pipeline`` (the steps, and the metadata the file carries). Files are
written, all or nothing, by :mod:`edgeleuk.io.modelwrite`, which ``calibrate`` shares.
"""

from __future__ import annotations

from edgeleuk.exporting.pipeline import ExportResult, export_model
from edgeleuk.exporting.profile import ExportProfile, load_profile

__all__ = ["ExportProfile", "ExportResult", "export_model", "load_profile"]
