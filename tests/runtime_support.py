"""Test helpers for the runtime and predict tests: tiny hand-built models and image files.

The models follow the export contract (input "image" uint8 [N, 450, 450, 3];
outputs "logit" and "prob" float32 [N]; ``edgeleuk.meta``/``edgeleuk.export``
metadata) but compute ``logit = GAIN * (mean pixel / 255 - 0.5)``, so a test sets
each cell's probability through its grey level, and the tests need neither the
exporter nor torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.meta import ModelMeta

GAIN = 12.0
SIZE = 450
EXPORT_INFO = {"edgeleuk_version": "test", "profile": "hand-built", "precision": "fp32", "opset": 17}


def expected_logit(images: np.ndarray) -> np.ndarray:
    """What the tiny model computes, in float64."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return GAIN * (flat.mean(axis=1) / 255.0 - 0.5)


def build_onnx(
    path: Path,
    meta: ModelMeta | None = None,
    *,
    with_meta: bool = True,
    gain: float = GAIN,
    centre: float = 127.5,
) -> Path:
    """Write the brightness model as ONNX (opset 17) with edgeleuk metadata.

    ``logit = gain * (mean pixel - centre) / 255``; :func:`expected_logit` assumes the defaults.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = {
        "scale": np.array(gain / 255.0, np.float32),
        "shift": np.array(-gain * centre / 255.0, np.float32),
    }
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        # Three short reductions, not one over 607,500 values: fp32 engines then agree to ~1e-6.
        helper.make_node("ReduceMean", ["image_f"], ["mean_w"], axes=[2], keepdims=0),
        helper.make_node("ReduceMean", ["mean_w"], ["mean_hw"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["mean_hw"], ["mean"], axes=[1], keepdims=0),
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
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeleuk-tests"
    )
    model.ir_version = 8
    if with_meta:
        meta = meta or ModelMeta(arch="seresnext_tiny", recipe="runtime-test")
        helper.set_model_props(
            model, {"edgeleuk.meta": meta.to_json(), "edgeleuk.export": json.dumps(EXPORT_INFO)}
        )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_ir(onnx_path: Path, xml_path: Path) -> Path:
    """Convert the ONNX model to OpenVINO IR, storing the metadata under rt_info["edgeleuk"]."""
    import onnx
    import openvino as ov

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    model = ov.Core().read_model(str(onnx_path))
    model.set_rt_info(props["edgeleuk.meta"], ["edgeleuk", "meta"])
    model.set_rt_info(props["edgeleuk.export"], ["edgeleuk", "export"])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)  # keep fp32 weights
    return xml_path


def gray_cell(level: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """An RGB cell whose mean is about ``level`` (a little noise so it is not constant)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-3, 4, size=(size, size, 3))
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def write_bmp(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def write_bad_files(folder: Path) -> dict[str, str]:
    """One file per bad-input kind that must give an error row; returns name -> kind."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.bmp").write_bytes(b"")
    (folder / "text.bmp").write_text("this is not an image\n")
    good = cv2.imencode(".bmp", gray_cell(100))[1].tobytes()
    (folder / "truncated.bmp").write_bytes(good[: len(good) // 3])
    cv2.imwrite(str(folder / "float.tiff"), np.zeros((20, 20, 3), np.float32))
    return {
        "zero.bmp": "empty",
        "text.bmp": "not an image",
        "truncated.bmp": "truncated",
        "float.tiff": "wrong depth",
    }


def write_flagged_files(folder: Path) -> dict[str, str]:
    """Files that decode with adjustments (flagged, not failed); returns name -> adjustment prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "small_gray.bmp"), np.full((300, 300), 200, np.uint8))
    cv2.imwrite(str(folder / "deep.png"), np.full((SIZE, SIZE, 3), 40000, np.uint16))
    write_bmp(folder / "big.bmp", gray_cell(60, size=500))
    return {"small_gray.bmp": "converted:gray", "deep.png": "scaled:16bit", "big.bmp": "cropped:"}


class FlakyBackend:
    """A stub engine that computes the brightness model in numpy and fails when told to.

    ``fail`` decides per call (numbered from 1) whether :meth:`run` raises, the way
    an engine does when memory runs out or its device goes away. Not a subclass of
    ``Backend`` on purpose: it stands in for any engine, and ``Classifier`` only
    uses these methods.
    """

    name = "flaky"
    # A file that exists, standing for the model: outputs name their model by its file's SHA-256.
    model_path = str(Path(__file__).parent / "data" / "stub-model.onnx")

    def __init__(self, fail=lambda call: False, meta: ModelMeta | None = None) -> None:
        self.fail = fail
        self.calls = 0
        self.meta = meta or ModelMeta(arch="seresnext_tiny", recipe="flaky-test")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.fail(self.calls):
            raise RuntimeError(
                f"[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : out of memory (call {self.calls})"
            )
        logits = expected_logit(batch).astype(np.float32)
        return logits, (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def metadata(self) -> dict[str, str]:
        return {"edgeleuk.meta": self.meta.to_json(), "edgeleuk.export": json.dumps(EXPORT_INFO)}

    def graph_io(self):
        return None

    def info(self):
        from edgeleuk.runtime.base import BackendInfo

        return BackendInfo(name=self.name, engine="stub", providers=("stub",), precision="fp32")


def with_ood_model(model: Path, cells: np.ndarray, out: Path) -> Path:
    """``model`` copied to ``out`` with an OOD model fitted on ``cells``' embeddings (as calibrate does)."""
    import dataclasses

    from edgeleuk import quality
    from edgeleuk.core.contract import EMBEDDING
    from edgeleuk.io.modelfile import read_model_meta
    from edgeleuk.io.modelwrite import write_model_with_meta
    from edgeleuk.runtime.registry import backend_options, choose_backend

    backend = choose_backend(model, "cpu", dataclasses.replace(backend_options(), extras=(EMBEDDING,)))[0]
    _, _, extras = backend.run_extras(cells, (EMBEDDING,))
    meta, _ = read_model_meta(model)
    write_model_with_meta(model, out, meta.replace(ood=quality.fit_ood(extras[EMBEDDING])))
    return out

