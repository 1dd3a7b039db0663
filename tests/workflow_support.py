"""Test helpers for the workflow tests: a hand-built ONNX model and cells of known brightness.

The model follows the export contract (input "image" uint8 [N, 450, 450, 3];
outputs "logit" and "prob" float32 [N]; ``edgeleuk.meta``/``edgeleuk.export``
metadata) but computes ``logit = GAIN * (mean pixel / 255 - 0.5)``, so a test
controls each cell's probability through its grey level. It needs only the
``onnx`` package, so these tests do not wait on the exporter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.meta import ModelMeta

GAIN = 12.0
SIZE = 450


def build_brightness_onnx(
    path: Path, meta: ModelMeta | None = None, gain: float = GAIN, centre: float = 127.5
) -> Path:
    """Write the brightness model to ``path`` (.onnx) with edgeleuk metadata.

    ``logit = gain * (mean pixel - centre) / 255``; :func:`prob_for_grey` assumes the defaults.
    """
    import onnx
    from onnx import TensorProto, helper

    meta = meta or ModelMeta(arch="seresnext_tiny", recipe="workflow-test")
    consts = {
        "scale": np.array(gain / 255.0, np.float32),
        "shift": np.array(-gain * centre / 255.0, np.float32),
        "axes": np.array([1, 2, 3], np.int64),
    }
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["image_f", "axes"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [
            helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N"]),
        ],
        initializer=[onnx.numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edgeleuk-tests"
    )
    model.ir_version = 9
    export_info = {
        "edgeleuk_version": "test",
        "profile": "hand-built",
        "precision": "fp32",
        "opset": 18,
        "input": {"name": "image", "dtype": "uint8", "shape": ["N", SIZE, SIZE, 3], "layout": "NHWC RGB"},
    }
    helper.set_model_props(
        model, {"edgeleuk.meta": meta.to_json(), "edgeleuk.export": json.dumps(export_info)}
    )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_brightness_ir(onnx_path: Path, xml_path: Path) -> Path:
    """Convert the brightness ONNX to OpenVINO IR with the metadata in rt_info, like the exporter."""
    import onnx
    import openvino as ov

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(props["edgeleuk.meta"], ["edgeleuk", "meta"])
    model.set_rt_info(props["edgeleuk.export"], ["edgeleuk", "export"])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def grey_for_prob(prob: float) -> int:
    """The grey level whose uniform image the brightness model scores closest to ``prob``."""
    logit = math.log(prob / (1.0 - prob))
    return int(np.clip(round((logit / GAIN + 0.5) * 255.0), 0, 255))


def prob_for_grey(grey: int) -> float:
    return 1.0 / (1.0 + math.exp(-GAIN * (grey / 255.0 - 0.5)))


def cell_bytes(grey: int, ext: str = ".bmp") -> bytes:
    """Encoded bytes of a uniform 450x450 cell image of one grey level."""
    img = np.full((SIZE, SIZE, 3), grey, np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def write_cell(path: Path, grey: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cell_bytes(grey, path.suffix))
    return path
