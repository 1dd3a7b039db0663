"""INT8 OpenVINO IR by NNCF: gated on OpenVINO CPU, metadata in rt_info, atomic .xml + .bin.

The accuracy-control metric and its fallbacks are in test_exporting_int8_accuracy.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from edgeleuk.core.errors import DataError
from edgeleuk.exporting import export_model, load_profile

EPOCH = 1_700_000_000


def _profile():
    # Tests only: a small calibration set (the shipped profile uses >= 300 images).
    return load_profile("openvino-int8").replace(calib_size=24, allow_small_calib=True, parity_n=12,
                                                 source_date_epoch=EPOCH)


@pytest.fixture(scope="module")
def int8_export(tiny_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    # Its own export: INT8 by NNCF (openvino-int8), not the shared cpu-fp32 tiny model.
    return export_model(tiny_checkpoint, tmp_path_factory.mktemp("int8") / "tiny.onnx", _profile(),
                        data=synth_root)


@pytest.mark.slow
def test_int8_ir_passes_gate(int8_export) -> None:
    assert int8_export.path.suffix == ".xml"  # .onnx was turned into the IR name
    assert [f.suffix for f in int8_export.files] == [".bin", ".xml"] and all(f.is_file() for f in int8_export.files)
    (check,) = int8_export.gate.checks
    assert check.engine == "openvino" and check.status == "passed"
    assert check.parity.agreement >= 0.99 and check.parity.f1_model is not None
    assert check.parity.f1_reference - check.parity.f1_model <= 0.005


@pytest.mark.slow
def test_int8_ir_is_quantized_and_keeps_contract(int8_export) -> None:
    model = ov.Core().read_model(str(int8_export.path))
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    (inp,) = model.inputs
    assert inp.get_element_type() == ov.Type.u8 and inp.get_partial_shape()[0].is_dynamic
    compiled = ov.Core().compile_model(model, "CPU")
    images = np.random.default_rng(0).integers(0, 256, (5, 450, 450, 3), dtype=np.uint8)
    out = compiled(images)
    assert out["logit"].shape == (5,) and out["prob"].dtype == np.float32


@pytest.mark.slow
def test_int8_metadata_in_rt_info(int8_export) -> None:
    from edgeleuk.io.modelfile import read_model_meta

    meta, export = read_model_meta(int8_export.path)
    assert meta.arch == "seresnext_tiny"
    assert export["precision"] == "int8" and export["gate"]["passed"] is True
    assert export["profile"]["allow_small_calib"] is True and export["profile"]["calib_size"] == 24
    assert json.loads(json.dumps(export)) == export
    quant = export["quantization"]
    # The synthetic gate cells are labelled, so the shipped profile's accuracy control ran.
    assert quant["method"] == "nncf.quantize_with_accuracy_control" and quant["accuracy_control"] == "on"
    assert quant["calibration_images"] == 24 and quant["validation_cells"] == 12
    assert quant["float"]["agreement"] == 1.0 and quant == int8_export.quantization
    assert "accuracy control on 12 labelled gate cells" in int8_export.describe()


@pytest.mark.slow
def test_int8_export_is_deterministic(int8_export, tiny_checkpoint: Path, synth_root: Path, tmp_path: Path) -> None:
    again = export_model(tiny_checkpoint, tmp_path / "tiny.xml", _profile(), data=synth_root)
    for a, b in zip(int8_export.files, again.files, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_int8_needs_enough_calibration_images(tiny_checkpoint: Path, synth_root: Path, tmp_path: Path) -> None:
    prof = _profile().replace(calib_size=5000)
    with pytest.raises(DataError, match="calibration needs 5000"):
        export_model(tiny_checkpoint, tmp_path / "big.xml", prof, data=synth_root)
    assert list(tmp_path.iterdir()) == []


def test_fp32_ir_profile_passes_fp32_gate(tiny_checkpoint: Path, synth_root: Path, tmp_path: Path) -> None:
    prof = load_profile("cpu-fp32").replace(format="openvino", gate_engines=("openvino",), parity_n=5)
    result = export_model(tiny_checkpoint, tmp_path / "fp32.xml", prof, data=synth_root)
    (check,) = result.gate.checks
    assert check.status == "passed" and check.parity.max_abs_logit_delta <= 1e-4
    assert result.quantization is None and "INT8" not in result.describe()
    model = ov.Core().read_model(str(result.path))
    assert not any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    assert model.get_rt_info(["edgeleuk", "meta"]).astype(str).startswith("{")


@pytest.mark.slow
def test_int8_ir_keeps_the_extra_outputs_in_float(int8_export) -> None:
    """NNCF keeps ``embedding`` and ``cam``; the map's nodes carry no FakeQuantize, so its mean tracks the logits."""
    model = ov.Core().read_model(str(int8_export.path))
    names = [sorted(out.get_names()) for out in model.outputs]
    assert names[3:] == [["embedding"], ["cam"]]
    quantized_cam = [op.get_friendly_name() for op in model.get_ordered_ops()
                     if op.get_type_name() == "FakeQuantize" and "/cam/" in op.get_friendly_name()]
    assert quantized_cam == []
    compiled = ov.Core().compile_model(model, "CPU")
    images = np.random.default_rng(1).integers(0, 256, (2, 450, 450, 3), dtype=np.uint8)
    out = compiled(images)
    assert out["embedding"].shape[0] == 2 and out["cam"].shape == (2, 300, 300)
    assert np.isfinite(out["cam"]).all() and np.isfinite(out["embedding"]).all()
