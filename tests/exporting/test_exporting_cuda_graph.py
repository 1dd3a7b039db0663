"""The exported graph's uint8 part runs on the GPU: every node there has a uint8 CUDA kernel.

ONNX Runtime assigns a node to the CUDA provider only when that provider registers a kernel
for the node's input types; otherwise the node runs on the CPU and every image is copied
device -> host -> device around it. The image is uint8 until its ``Cast``, so each node that
reads or writes a uint8 tensor must be one of the ops below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper, shape_inference

#: Ops whose CUDA kernel accepts uint8, from ONNX Runtime's registered-kernel table
#: (github.com/microsoft/onnxruntime, docs/OperatorKernels.md, section "Operators implemented by
#: CUDAExecutionProvider", read at commit 001d12d2623fd411ce0f83d05abb5e82304a3389). Pad is not
#: among them: its CUDA kernel takes bool, double, float and float16 only.
CUDA_UINT8_OPS = frozenset({
    "Cast", "Concat", "ConstantOfShape", "Expand", "Flatten", "Gather", "Reshape", "Slice",
    "Squeeze", "Transpose", "Unsqueeze",
})


def uint8_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes that read or write a uint8 tensor (types from ONNX shape inference)."""
    model = shape_inference.infer_shapes(model)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return [n for n in graph.node
            if any(types.get(name) == TensorProto.UINT8 for name in [*n.input, *n.output])]


def _check(model: onnx.ModelProto) -> None:
    nodes = uint8_nodes(model)
    assert nodes, "the image path (uint8) was not found"
    assert "Cast" in {n.op_type for n in nodes}
    off = [f"{n.op_type} ({n.name})" for n in nodes if n.op_type not in CUDA_UINT8_OPS]
    assert off == [], f"uint8 nodes without a CUDA uint8 kernel (would run on the CPU): {off}"


def test_fp32_export_has_only_cuda_uint8_ops_on_the_image_path(tiny_onnx: Path) -> None:
    _check(onnx.load(str(tiny_onnx)))


def test_fp16_graph_has_only_cuda_uint8_ops_on_the_image_path(tiny_checkpoint: Path) -> None:
    from edgeleuk.exporting.graph import export_onnx  # the graph the fp16 profile writes
    from edgeleuk.modeling.checkpoint import load_checkpoint

    _check(export_onnx(load_checkpoint(tiny_checkpoint), 17, half=True))


def test_the_check_finds_a_uint8_pad() -> None:
    """The check itself: a uint8 Pad (what the graph had before) is reported."""
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Pad", ["image", "pads"], ["padded"]),
         helper.make_node("Cast", ["padded"], ["out"], to=TensorProto.FLOAT)],
        "pad", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(np.array([0, 1, 0, 0]), "pads")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(AssertionError, match=r"Pad \("):
        _check(model)
