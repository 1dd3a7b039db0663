"""A model file is not trusted as it comes: ``Classifier.load`` refuses bad metadata and graphs (exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_support import EXPORT_INFO, build_onnx, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.contract import TensorSpec, graph_problems
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime.classifier import Classifier


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("good") / "good.onnx")


def _with_metadata(src: Path, dst: Path, meta: str | None = None, export: str | None = None) -> Path:
    """A copy of ``src`` whose metadata strings are replaced verbatim (no validation on the way)."""
    import onnx

    from edgeleuk.io.formats import set_onnx_metadata

    proto = onnx.load(str(src))
    strings = {
        "edgeleuk.meta": meta or ModelMeta().to_json(),
        "edgeleuk.export": export or json.dumps(EXPORT_INFO),
    }
    set_onnx_metadata(proto, strings)
    onnx.save(proto, str(dst))
    return dst


def _meta_with(**changes) -> str:
    d = ModelMeta().to_dict()
    for key, value in changes.items():
        if key in ("input_size", "crop"):
            d["preprocess"][key] = value
        else:
            d[key] = value
    return json.dumps(d)


BAD_META = {
    "no class 1": _meta_with(class_names={"0": "hem"}),
    "no class 0": _meta_with(class_names={"1": "all"}),
    "a third class": _meta_with(class_names={"0": "hem", "1": "all", "2": "other"}),
    "duplicate names": _meta_with(class_names={"0": "all", "1": "all"}),
    "duplicate names by case": _meta_with(class_names={"0": "ALL", "1": "all"}),
    "formula name": _meta_with(class_names={"0": "hem", "1": "=1+1"}),
    "at-sign name": _meta_with(class_names={"0": "@SUM(1)", "1": "all"}),
    "control char name": _meta_with(class_names={"0": "hem\r", "1": "all"}),
    "bell char name": _meta_with(class_names={"0": "h\x07em", "1": "all"}),
    "number as name": _meta_with(class_names={"0": 0, "1": "all"}),
    "class names as a list": _meta_with(class_names=["hem", "all"]),
    "huge input_size": _meta_with(input_size=200000),
    "fractional input_size": _meta_with(input_size=450.5),
    "input_size as text": _meta_with(input_size="450"),
    "threshold as a list": _meta_with(threshold=[0.5]),
    "threshold above 1": _meta_with(threshold=1.5),
    "threshold 0": _meta_with(threshold=0),
    "threshold NaN": _meta_with(threshold=float("nan")),
    "threshold as text": _meta_with(threshold="0.5"),
    "meta as a list": json.dumps([ModelMeta().to_dict()]),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_bad_metadata_is_refused(good: Path, tmp_path: Path, case: str) -> None:
    model = _with_metadata(good, tmp_path / "bad.onnx", meta=BAD_META[case])
    with pytest.raises(UsageError, match="malformed edgeleuk metadata") as refused:
        Classifier.load(model, backend="cpu")
    assert refused.value.exit_code == 2


@pytest.mark.parametrize("export", ["[1, 2]", '"text"', "3"])
def test_export_record_must_be_an_object(good: Path, tmp_path: Path, export: str) -> None:
    model = _with_metadata(good, tmp_path / "bad.onnx", export=export)
    with pytest.raises(UsageError, match="must be a JSON object"):
        Classifier.load(model, backend="cpu")


def test_good_metadata_still_loads(good: Path, tmp_path: Path) -> None:
    model = _with_metadata(
        good, tmp_path / "ok.onnx", meta=_meta_with(class_names={"0": "HEM normal", "1": "ALL_blast"})
    )
    clf = Classifier.load(model, backend="cpu")
    assert clf.predict_arrays(gray_cell(230))[0].label == "ALL_blast"


def _graph(
    path: Path,
    *,
    in_name: str = "image",
    in_type: str = "UINT8",
    in_shape: tuple = ("N", 450, 450, 3),
    reduce_axes: tuple = (1, 2, 3),
    outputs: tuple = ("logit", "prob"),
) -> Path:
    """A brightness graph that breaks the contract in one chosen way, with good metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_shape = ["N"] + [in_shape[a] for a in range(1, 4) if a not in reduce_axes]
    nodes = [
        helper.make_node("Cast", [in_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=list(reduce_axes), keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        "contract-test",
        [helper.make_tensor_value_info(in_name, getattr(TensorProto, in_type), list(in_shape))],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, out_shape) for name in outputs],
        initializer=[
            numpy_helper.from_array(np.array(12 / 255, np.float32), "scale"),
            numpy_helper.from_array(np.array(-6, np.float32), "shift"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model, {"edgeleuk.meta": ModelMeta().to_json(), "edgeleuk.export": json.dumps(EXPORT_INFO)}
    )
    onnx.save(model, str(path))
    return path


BAD_GRAPHS = {
    "input name": ({"in_name": "img"}, "expected one input 'image'"),
    "input dtype": ({"in_type": "FLOAT"}, "input 'image' float32"),
    "input size": ({"in_shape": ("N", 224, 224, 3)}, r"\[N, 224, 224, 3\], expected"),
    "fixed batch": ({"in_shape": (1, 450, 450, 3)}, "fixed batch axis"),
    "missing prob": ({"outputs": ("logit",)}, "no output 'prob'"),
    "output length": ({"reduce_axes": (1, 2)}, r"output 'logit' float32 \[N, 3\]"),
}


def _refusal(model: Path, backend: str) -> str:
    """The message ``Classifier.load`` refuses ``model`` with (exit 2), or why it did not."""
    try:
        Classifier.load(model, backend=backend)
    except UsageError as exc:
        return f"{exc.exit_code} {exc}"
    return "loaded"


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_graph_breaking_the_contract_is_refused(tmp_path: Path, case: str) -> None:
    changes, message = BAD_GRAPHS[case]
    refused = _refusal(_graph(tmp_path / "g.onnx", **changes), "cpu")
    assert refused.startswith("2 ") and "does not follow the edgeleuk model contract" in refused
    assert re.search(message, refused), refused


def test_contract_graph_passes(tmp_path: Path) -> None:
    clf = Classifier.load(_graph(tmp_path / "g.onnx"), backend="cpu")
    assert clf.predict_arrays(gray_cell(30))[0].ok


# OpenVINO reads the graph through its own API. These loads run in a child process: compiling
# these graphs in the test process and later forking after training crashed pytest with SIGSEGV
# (the fork-after-threads crash in CHANGELOG.md; not an effect of the checks).
_OPENVINO_CHILD = """
import sys
from pathlib import Path
sys.path[:0] = [str(Path.cwd()), str(Path.cwd().parent)]  # this folder and tests/ (runtime_support)
import test_model_validation as t
folder = Path(sys.argv[1])
for case, (changes, _) in t.BAD_GRAPHS.items():
    print(case, "=", t._refusal(t._graph(folder / "g.onnx", **changes), "openvino").replace("\\n", " "))
clf = t.Classifier.load(t._graph(folder / "ok.onnx"), backend="openvino")
print("good =", clf.predict_arrays(t.gray_cell(30))[0].ok)
"""


def test_openvino_backend_refuses_the_same_graphs(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    child = subprocess.run(
        [sys.executable, "-c", _OPENVINO_CHILD, str(tmp_path)],
        check=False,
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    said = dict(line.split(" = ", 1) for line in child.stdout.splitlines() if " = " in line)
    for case, (_, message) in BAD_GRAPHS.items():
        assert said[case].startswith("2 ") and re.search(message, said[case]), (case, said[case])
    assert said["good"] == "True"


def test_graph_problems_are_empty_for_the_contract() -> None:
    inputs = [TensorSpec("image", "uint8", (None, 450, 450, 3))]
    outputs = [TensorSpec("logit", "float32", (None,)), TensorSpec("prob", "float32", (None,))]
    assert graph_problems(inputs, outputs, 450) == []
    assert graph_problems(inputs, outputs, 300)  # metadata says 300, graph takes 450


def test_predict_refuses_a_bad_model_before_reading_any_image(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_bmp(tmp_path / "cells" / "1.bmp", gray_cell(100))
    model = _with_metadata(
        good, tmp_path / "bad.onnx", meta=_meta_with(class_names={"0": "hem", "1": "=1+1"})
    )

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was read before the model was checked")

    monkeypatch.setattr("edgeleuk.runtime.pipeline.decode_image", no_decoding)
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "cells"), "--model", str(model), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "not plain text" in result.stderr
    assert not out.exists()


def _broken_models(good: Path, folder: Path) -> dict[str, Path]:
    """A truncated file, bytes that are no protobuf, and initializers read from outside the folder."""
    import onnx

    folder.mkdir(exist_ok=True)
    data = good.read_bytes()
    broken = {"truncated": folder / "truncated.onnx", "garbage": folder / "garbage.onnx",
              "external data outside": folder / "outside.onnx"}
    broken["truncated"].write_bytes(data[: len(data) // 2])
    broken["garbage"].write_bytes(b"\x08\x07not a model" * 40)
    proto = onnx.load(str(good))
    for tensor in proto.graph.initializer:
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.add(key="location", value="../../../../../etc/hostname")
        tensor.external_data.add(key="length", value="4")
        tensor.ClearField("raw_data")
    onnx.save(proto, str(broken["external data outside"]))
    return broken


@pytest.mark.parametrize("backend", ["cpu", "openvino", "auto", "auto without openvino", "cpu staged"])
def test_a_broken_model_file_is_a_usage_error_naming_it_on_every_backend(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    from edgeleuk.runtime.openvino import OpenVINOBackend

    if backend == "auto without openvino":
        monkeypatch.setattr(OpenVINOBackend, "availability", classmethod(lambda cls: "not installed (test)"))
    name, _, staged = backend.partition(" ")
    for kind, path in _broken_models(good, tmp_path / "models").items():
        with pytest.raises(UsageError) as refused:
            Classifier.load(path, name, tta="staged" if staged == "staged" else "full")
        assert str(path) in str(refused.value), (kind, str(refused.value))
        assert refused.value.exit_code == 2


def test_garbage_openvino_ir_is_a_usage_error_naming_it(good: Path, tmp_path: Path) -> None:
    from runtime_support import build_ir

    xml = build_ir(good, tmp_path / "m.xml")
    xml.write_text("<net><layers>garbage")
    for backend in ("openvino", "auto"):
        with pytest.raises(UsageError, match=re.escape(str(xml))):
            Classifier.load(xml, backend)


def test_predict_on_a_truncated_model_exits_2_without_a_traceback(good: Path, tmp_path: Path) -> None:
    write_bmp(tmp_path / "cells" / "1.bmp", gray_cell(100))
    broken = _broken_models(good, tmp_path / "models")["truncated"]
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "cells"), "-m", str(broken), "--backend", "cpu", "--out",
              str(tmp_path / "p.csv")]
    )
    assert result.exit_code == 2, result.output
    assert f"error: {broken}: not a usable ONNX model" in result.stderr and "Traceback" not in result.output
