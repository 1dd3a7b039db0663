"""Checkpoint -> one ONNX graph with preprocessing and rotation TTA folded in.

We use torch's TorchScript-based exporter (``dynamo=False``): for this static,
control-flow-free wrapper it is fast, gives byte-identical files run after run,
and honours the constant ``Pad`` symbolic in :mod:`edgeleuk.tta`.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgeleuk.checkpoint import Checkpoint
from edgeleuk.contract import INPUT_NAME, OUTPUT_NAMES, VIEW_LOGITS, VIEWS_NAME
from edgeleuk.errors import EdgeleukError
from edgeleuk.tta import TTAClassifier


def build_wrapper(ckpt: Checkpoint, half: bool = False) -> Any:
    """The :class:`~edgeleuk.tta.TTAClassifier` around the checkpoint's network, in eval mode."""
    return TTAClassifier(ckpt.build_model(), ckpt.meta, half=half).eval()


def _views_entry(wrapper: Any) -> Any:
    """A module whose forward is ``wrapper.forward_views``: the exporter traces ``forward`` only."""
    class ViewsEntry(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tta = wrapper

        def forward(self, image: Any, views: Any) -> Any:
            return self.tta.forward_views(image, views)

    return ViewsEntry().eval()


def views_as_initializer(model: Any, rotations: int) -> None:
    """Turn the traced ``views`` input into an initializer holding every rotation, 0..R-1.

    Traced as an input, the rotation subset survives constant folding as one small
    named tensor; stored as an initializer, the file's contract stays ``image`` in,
    and the engines fold the full index back into a constant.
    """
    kept = [i for i in model.graph.input if i.name != VIEWS_NAME]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.append(numpy_helper.from_array(np.arange(rotations, dtype=np.int64), VIEWS_NAME))


def export_onnx(ckpt: Checkpoint, opset: int, half: bool = False) -> Any:
    """Trace the wrapped checkpoint into an ``onnx.ModelProto``.

    Args:
        ckpt: The checkpoint.
        opset: ONNX opset version.
        half: float16 network (weights and activations); input and outputs keep their types.

    Raises:
        EdgeleukError: torch could not export the network.
    """
    entry = _views_entry(build_wrapper(ckpt, half=half))
    pre = ckpt.meta.preprocess
    # Two images, not one: a traced size-1 batch could be specialised into the graph;
    # likewise two views, fewer than all, so neither count is baked in.
    example = (torch.zeros(2, pre.input_size, pre.input_size, 3, dtype=torch.uint8),
               torch.arange(min(2, pre.rotations), dtype=torch.int64))
    buf = io.BytesIO()
    outputs = [*OUTPUT_NAMES, VIEW_LOGITS]
    dynamic = {**{name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)}, VIEWS_NAME: {0: "V"},
               VIEW_LOGITS: {0: "N", 1: "V"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy exporter announces its deprecation; we chose it on purpose (module docstring).
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.onnx.export(
                entry, example, buf, dynamo=False, input_names=[INPUT_NAME, VIEWS_NAME],
                output_names=outputs, opset_version=opset, dynamic_axes=dynamic,
                do_constant_folding=True,
            )
    except Exception as exc:  # torch raises many types here; the cause is in the message
        raise EdgeleukError(f"torch could not export {ckpt.meta.arch} to ONNX opset {opset}: {exc}") from exc
    model = onnx.load_from_string(buf.getvalue())
    views_as_initializer(model, pre.rotations)
    model.doc_string = (f"edgeleuk {ckpt.meta.arch}: uint8 RGB NHWC image -> logit, prob, view_logits "
                        "(rotation TTA inside; initializer 'views' lists the rotations computed)")
    return model
