"""Checkpoint -> one ONNX graph with preprocessing and rotation TTA folded in, and the checks it must pass.

We use torch's TorchScript-based exporter (``dynamo=False``): for this static,
control-flow-free wrapper it is fast, gives byte-identical files run after run,
and honours the constant ``Pad`` symbolic in :mod:`edgeleuk.tta`. Before any
number is compared, the written file must pass ``onnx.checker`` and the
input/output contract (:func:`check_onnx_file`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from edgeleuk.checkpoint import Checkpoint
from edgeleuk.contract import INPUT_NAME, OUTPUT_NAMES
from edgeleuk.errors import EdgeleukError, GateFailed
from edgeleuk.meta import ModelMeta
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
    if tuple(o.name for o in outputs) != OUTPUT_NAMES:
        problems.append(f"outputs {[o.name for o in outputs]}, expected {list(OUTPUT_NAMES)}")
    for out in outputs:
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(_dims(out)) != 1:
            problems.append(f"output {out.name} must be float32 [N]")
    return problems


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
