"""Checkpoint -> one ONNX graph with preprocessing and rotation TTA folded in, and the checks it must pass.

We use torch's TorchScript-based exporter (``dynamo=False``): for this static,
control-flow-free wrapper it is fast, gives byte-identical files run after run,
and honours the constant ``Pad`` symbolic in :mod:`edgeleuk.modeling.tta`. Before any
number is compared, the written file must pass ``onnx.checker`` and the
input/output contract (:func:`check_onnx_file`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgeleuk.core.contract import (
    CAM,
    EMBEDDING,
    EXTRA_OUTPUTS,
    EXTRA_RANKS,
    INPUT_NAME,
    OUTPUT_NAMES,
    VIEW_LOGITS,
    VIEWS_NAME,
)
from edgeleuk.core.errors import EdgeleukError, GateFailed
from edgeleuk.core.meta import ModelMeta

# The module, not the class: the class is built on first use (it imports torch), and a name bound
# at import would pin the first build (make mutate could then never reach a changed definition).
from edgeleuk.modeling import tta
from edgeleuk.modeling.checkpoint import Checkpoint
from edgeleuk.modeling.model import head_of


def build_wrapper(ckpt: Checkpoint, half: bool = False, extras: bool = False) -> Any:
    """The :class:`~edgeleuk.modeling.tta.TTAClassifier` around the checkpoint's network, in eval mode."""
    return tta.TTAClassifier(ckpt.build_model().eval(), ckpt.meta, half=half, extras=extras).eval()


def _views_entry(wrapper: Any) -> Any:
    """A module whose forward is ``wrapper.forward_extras``: the exporter traces ``forward`` only."""
    class ViewsEntry(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tta = wrapper

        def forward(self, image: Any, views: Any) -> Any:
            return self.tta.forward_extras(image, views)

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
    """Trace the wrapped checkpoint, with its extra outputs, into an ``onnx.ModelProto``.

    Args:
        ckpt: The checkpoint.
        opset: ONNX opset version.
        half: float16 network (weights and activations); input and outputs keep their types.

    Raises:
        EdgeleukError: torch could not export the network.
    """
    return export_wrapper(build_wrapper(ckpt, half=half, extras=True), ckpt.meta, opset)


def export_wrapper(wrapper: Any, meta: ModelMeta, opset: int) -> Any:
    """Trace a :class:`~edgeleuk.modeling.tta.TTAClassifier` built with ``extras`` into an ``onnx.ModelProto``.

    The graph's outputs: ``logit``, ``prob``, ``view_logits``, ``embedding``, ``cam``. An engine
    computes only what it is asked for (ONNX Runtime prunes the nodes of outputs not fetched; the
    ``openvino`` backend drops their results before compiling), so the default call costs what
    it did before the extras existed.

    Raises:
        EdgeleukError: torch could not export the network.
    """
    entry = _views_entry(wrapper)
    pre = meta.preprocess
    # Two images, not one: a traced size-1 batch could be specialised into the graph;
    # likewise two views, fewer than all, so neither count is baked in.
    example = (torch.zeros(2, pre.input_size, pre.input_size, 3, dtype=torch.uint8),
               torch.arange(min(2, pre.rotations), dtype=torch.int64))
    buf = io.BytesIO()
    outputs = [*OUTPUT_NAMES, VIEW_LOGITS, *EXTRA_OUTPUTS]
    dynamic = {**{name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES, *EXTRA_OUTPUTS)}, VIEWS_NAME: {0: "V"},
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
        raise EdgeleukError(f"torch could not export {meta.arch} to ONNX opset {opset}: {exc}") from exc
    model = onnx.load_from_string(buf.getvalue())
    views_as_initializer(model, pre.rotations)
    _static_sides(model, {EMBEDDING: [head_of(wrapper.net)[2].in_features], CAM: [pre.crop, pre.crop]})
    model.doc_string = (f"edgeleuk {meta.arch}: uint8 RGB NHWC image -> logit, prob, view_logits, embedding, "
                        "cam (rotation TTA inside; initializer 'views' lists the rotations computed)")
    return model


def _static_sides(model: Any, sides: dict[str, list[int]]) -> None:
    """Declare the extras' fixed sides (D; crop x crop): the tracer leaves them symbolic."""
    for out in model.graph.output:
        for dim, value in zip(list(out.type.tensor_type.shape.dim)[1:], sides.get(out.name, []), strict=False):
            dim.Clear()
            dim.dim_value = value


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def contract_problems(model: Any, meta: ModelMeta) -> list[str]:
    """Differences between the graph's inputs/outputs and the contract (empty when it holds)."""
    size = meta.preprocess.input_size
    problems = []
    inputs = list(model.graph.input)
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    else:
        elem = inputs[0].type.tensor_type.elem_type
        if elem != onnx.TensorProto.UINT8 or _dims(inputs[0])[1:] != [size, size, 3]:
            problems.append(f"input {onnx.TensorProto.DataType.Name(elem)} {_dims(inputs[0])}, "
                            f"expected UINT8 [N, {size}, {size}, 3]")
        if isinstance(_dims(inputs[0])[0], int):
            problems.append("input batch axis is fixed; it must be dynamic")
    outputs = list(model.graph.output)
    expected = (*OUTPUT_NAMES, VIEW_LOGITS)
    names = tuple(o.name for o in outputs)
    # The extras are optional (files exported before them lack them), in contract order when present.
    if names[:3] != expected or names[3:] not in _EXTRA_TAILS:
        problems.append(f"outputs {list(names)}, expected {list(expected)} (then optionally {list(EXTRA_OUTPUTS)})")
    crop = meta.preprocess.crop
    shapes = {VIEW_LOGITS: "[N, V]", EMBEDDING: "[N, D]", CAM: f"[N, {crop}, {crop}]"}
    for out in outputs:
        rank = {VIEW_LOGITS: 2, **EXTRA_RANKS}.get(out.name, 1)
        dims = _dims(out)
        bad_cam = out.name == CAM and dims[1:] != [crop, crop]
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != rank or bad_cam:
            problems.append(f"output {out.name} must be float32 {shapes.get(out.name, '[N]')}, got {dims}")
    return problems + _views_problems(model, meta.preprocess.rotations)


# The output lists a graph may end with after view_logits: none, or the extras in contract order.
_EXTRA_TAILS = {EXTRA_OUTPUTS[:k] for k in range(len(EXTRA_OUTPUTS) + 1)} | {(CAM,)}


def _views_problems(model: Any, rotations: int) -> list[str]:
    """The ``views`` initializer must list every rotation, so the file's own call is the full TTA."""
    found = [t for t in model.graph.initializer if t.name == VIEWS_NAME]
    if not found:
        return [f"no '{VIEWS_NAME}' initializer (the rotations the graph computes)"]
    value = numpy_helper.to_array(found[0])
    if value.dtype.name != "int64" or value.tolist() != list(range(rotations)):
        return [f"initializer '{VIEWS_NAME}' is {value.dtype} {value.tolist()}, expected int64 0..{rotations - 1}"]
    return []


def fp16_problems(model: Any) -> list[str]:
    """Why a graph is not float16 inside (empty when every floating weight is float16)."""
    kinds = {onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer
             if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)}
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    fp32_convs = [t.name for t in model.graph.initializer
                  if t.name in conv_weights and t.data_type != onnx.TensorProto.FLOAT16]
    problems = [f"{len(fp32_convs)} Conv weights are not float16 (e.g. {fp32_convs[0]})"] if fp32_convs else []
    if "FLOAT16" not in kinds:
        problems.append("no float16 weights at all")
    return problems


def check_onnx_file(path: Path, meta: ModelMeta, fp16: bool = False) -> None:
    """``onnx.checker`` (full check) plus the input/output contract, on the written file.

    Raises:
        GateFailed: The file is malformed or breaks the contract.
    """
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GateFailed(f"exported graph is not valid ONNX: {exc}") from exc
    model = onnx.load(str(path))
    problems = contract_problems(model, meta) + (fp16_problems(model) if fp16 else [])
    if problems:
        raise GateFailed("exported graph breaks the input/output contract: " + "; ".join(problems))
