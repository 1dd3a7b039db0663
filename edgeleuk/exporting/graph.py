"""Checkpoint -> one ONNX graph with preprocessing and rotation TTA folded in.

We use torch's TorchScript-based exporter (``dynamo=False``): for this static,
control-flow-free wrapper it is fast, gives byte-identical files run after run,
and honours the constant ``Pad`` symbolic in :mod:`edgeleuk.tta`.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import onnx
import torch

from edgeleuk.checkpoint import Checkpoint
from edgeleuk.contract import INPUT_NAME, OUTPUT_NAMES
from edgeleuk.errors import EdgeleukError
from edgeleuk.tta import TTAClassifier


def build_wrapper(ckpt: Checkpoint, half: bool = False) -> Any:
    """The :class:`~edgeleuk.tta.TTAClassifier` around the checkpoint's network, in eval mode."""
    return TTAClassifier(ckpt.build_model(), ckpt.meta, half=half).eval()


def export_onnx(ckpt: Checkpoint, opset: int, half: bool = False) -> Any:
    """Trace the wrapped checkpoint into an ``onnx.ModelProto``.

    Args:
        ckpt: The checkpoint.
        opset: ONNX opset version.
        half: float16 network (weights and activations); input and outputs keep their types.

    Raises:
        EdgeleukError: torch could not export the network.
    """
    wrapper = build_wrapper(ckpt, half=half)
    size = ckpt.meta.preprocess.input_size
    # Two images, not one: a traced size-1 batch could be specialised into the graph.
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    buf = io.BytesIO()
    dynamic = {name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy exporter announces its deprecation; we chose it on purpose (module docstring).
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.onnx.export(
                wrapper, (example,), buf, dynamo=False, input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES), opset_version=opset, dynamic_axes=dynamic,
                do_constant_folding=True,
            )
    except Exception as exc:  # torch raises many types here; the cause is in the message
        raise EdgeleukError(f"torch could not export {ckpt.meta.arch} to ONNX opset {opset}: {exc}") from exc
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = f"edgeleuk {ckpt.meta.arch}: uint8 RGB NHWC image -> logit, prob (rotation TTA inside)"
    return model
