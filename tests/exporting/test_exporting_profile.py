"""Export profiles, output naming, export time and image selection for the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeleuk.core.errors import ConfigError, DataError, UsageError
from edgeleuk.exporting import load_profile
from edgeleuk.exporting.imagesets import gate_and_quant_sets
from edgeleuk.exporting.pipeline import export_time, output_path
from edgeleuk.exporting.profile import MIN_INT8_CALIB


def test_shipped_profiles_load_with_their_gate_thresholds() -> None:
    fp32, fp16, int8 = (load_profile(n) for n in ("cpu-fp32", "export/cuda-fp16.toml", "openvino-int8"))
    assert (fp32.precision, fp32.format, fp32.max_abs_logit_delta, fp32.min_agreement) == ("fp32", "onnx", 1e-4, 1.0)
    assert (fp16.precision, fp16.min_agreement) == ("fp16", 0.995) and "cuda" in fp16.gate_engines
    assert (int8.format, int8.min_agreement, int8.max_f1_drop) == ("openvino", 0.99, 0.005)
    assert int8.calib_size >= MIN_INT8_CALIB and not int8.allow_small_calib
    assert int8.accuracy_control and int8.accuracy_control_n == int8.parity_n  # F1 control on the gate cells
    assert not fp32.accuracy_control and not fp16.accuracy_control


@pytest.mark.parametrize(("text", "match"), [
    ('name = "x"\nunknown_key = 1\n', "unknown_key"),
    ('name = "x"\nprecision = "int8"\ncalib_size = 300\ngate_engines = ["openvino"]\n', "OpenVINO IR"),
    ('name = "x"\nprecision = "int8"\nformat = "openvino"\ngate_engines = ["openvino"]\ncalib_size = 50\n', ">= 300"),
    ('name = "x"\ngate_engines = ["tensorflow"]\n', "gate_engines"),
    ('name = "x"\nformat = "openvino"\ngate_engines = ["cpu"]\n', "cpu cannot read an OpenVINO IR"),
    ('name = "x"\n[compute.bf16]\nmin_agreement = 2.0\n', "min_agreement must lie in"),
    ('name = "x"\n[compute.bf16]\nbatch_sizes = [1]\n', "compute.bf16"),
    ('name = "x"\nprecision = "fp8"\n', "fp8"),
])
def test_bad_profiles_are_refused(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_profile(path)


def test_small_calibration_needs_explicit_opt_in() -> None:
    prof = load_profile("openvino-int8").replace(calib_size=16, allow_small_calib=True)
    assert prof.calib_size == 16
    with pytest.raises(ConfigError):
        load_profile("openvino-int8").replace(calib_size=16)


def test_output_path_follows_profile(caplog: pytest.LogCaptureFixture) -> None:
    assert output_path("m.onnx", load_profile("cpu-fp32")) == Path("m.onnx")
    assert output_path("m.onnx", load_profile("openvino-int8")) == Path("m.xml")
    with pytest.raises(UsageError, match=".onnx"):
        output_path("m.xml", load_profile("cpu-fp32"))


def test_export_time_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    prof = load_profile("cpu-fp32")
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert export_time(prof.replace(source_date_epoch=0)) == "1970-01-01T00:00:00+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert export_time(prof) == "1970-01-02T00:00:00+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(ConfigError):
        export_time(prof)


def test_gate_set_prefers_labelled_prelim_and_quant_uses_train(synth_root: Path) -> None:
    gate, quant = gate_and_quant_sets(synth_root, gate_n=5, quant_n=7, size=450)
    assert gate.split == "prelim" and gate.labels is not None and len(gate) == 5
    assert gate.images.dtype == np.uint8 and gate.images.shape[1:] == (450, 450, 3)
    assert quant.split == "train" and len(quant) == 7 and "SYNTHETIC" in quant.source
    with pytest.raises(DataError, match="calibration needs"):
        gate_and_quant_sets(synth_root, gate_n=5, quant_n=10_000, size=450)


def test_plain_folder_gives_unlabelled_gate_set(tmp_path: Path) -> None:
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"cell{i}.png"), np.full((450, 450, 3), 40 * i, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    gate, quant = gate_and_quant_sets(tmp_path, gate_n=10, quant_n=0, size=450)
    assert len(gate) == 3 and gate.labels is None and quant is None
    with pytest.raises(DataError, match="not found"):
        gate_and_quant_sets(tmp_path / "missing", gate_n=3, quant_n=0, size=450)
