"""Accuracy-controlled INT8: the floored-F1 metric, what runs with and without labels, the record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeleuk.core.errors import ConfigError
from edgeleuk.evaluation.metrics import binary_metrics
from edgeleuk.exporting import export_model, load_profile
from edgeleuk.exporting.gate import ReferenceOutputs
from edgeleuk.exporting.int8 import describe_quantization
from edgeleuk.exporting.int8_accuracy import F1Validator, _record

LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
REF_PROBS = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.1, 0.6], dtype=np.float32)


class FakeCompiled:
    """Stands in for an ``openvino.CompiledModel``: fixed probabilities per image (image i is filled with i)."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"prob": self.probs[images[:, 0, 0, 0]].astype(np.float32)}


def _validator(max_f1_drop: float = 0.05, min_agreement: float = 0.9) -> F1Validator:
    images = np.arange(len(LABELS), dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    ref = ReferenceOutputs(np.log(REF_PROBS / (1 - REF_PROBS)).astype(np.float64), REF_PROBS, 0.5)
    return F1Validator(images, LABELS, ref, max_f1_drop, min_agreement)


def test_float_model_scores_reference_f1() -> None:
    validator = _validator()
    metric, per_cell = validator(FakeCompiled(REF_PROBS), iter(range(10)))
    f1_ref = binary_metrics(LABELS, REF_PROBS, 0.5)["f1"]
    assert metric == pytest.approx(f1_ref) and validator.calls[-1][3] == 1.0
    assert len(per_cell) == 10 and min(per_cell) >= 1.0  # every cell keeps the reference's label


def test_flips_that_raise_f1_still_lower_the_metric() -> None:
    # Cells 4 and 9 were wrong in the reference; flipping both raises F1 to 1.0 but costs 20 % agreement.
    probs = REF_PROBS.copy()
    probs[[4, 9]] = [0.6, 0.4]
    validator = _validator(max_f1_drop=0.05, min_agreement=0.9)
    metric, per_cell = validator(FakeCompiled(probs), range(10))
    f1_ref = binary_metrics(LABELS, REF_PROBS, 0.5)["f1"]
    _, f1, agreement = validator.score(probs.astype(np.float64), np.arange(10))
    assert f1 == 1.0 and agreement == pytest.approx(0.8)
    # The floor: F1_ref - max_f1_drop * (1 - agreement) / (1 - min_agreement) = F1_ref - 0.1.
    assert metric == pytest.approx(f1_ref - 0.1)
    assert f1_ref - metric > 0.05  # so NNCF, like the gate, sees more than the allowed drop
    assert np.argsort(per_cell)[:2].tolist() in ([4, 9], [9, 4])  # flipped cells rank first for NNCF


def test_metric_is_per_subset_and_nan_is_worst() -> None:
    validator = _validator()
    metric, _ = validator(FakeCompiled(REF_PROBS), [0, 5])
    assert metric == pytest.approx(1.0)  # both cells right in the reference and here
    broken = np.full(10, np.nan, dtype=np.float32)
    metric, per_cell = validator(FakeCompiled(broken), range(10))
    assert metric == -1.0 and per_cell == [0.0] * 10


def test_record_says_whether_restoration_ran() -> None:
    from edgeleuk.exporting.imagesets import ImageSet

    gate = ImageSet(np.zeros((10, 2, 2, 3), np.uint8), LABELS, "test cells", "prelim")
    prof = load_profile("openvino-int8")
    validator = _validator()
    # (cells, metric, f1, agreement): NNCF's mode probe, float model, fully INT8, ...
    validator.calls = [(1, 0.8, 0.8, 1.0), (10, 0.8, 0.8, 1.0), (10, 0.797, 0.8, 0.995)]
    assert _record(validator, 10, gate, prof)["restoration"].startswith("nothing returned")
    # Too far below: NNCF ranks on a subset (4 cells), returns one group to float and validates again.
    validator.calls = [(1, 0.8, 0.8, 1.0), (10, 0.8, 0.8, 1.0), (10, 0.7, 0.75, 0.98), (4, 0.5, 0.5, 0.5),
                       (10, 0.8, 0.8, 1.0)]
    record = _record(validator, 10, gate, prof)
    assert record["fully_quantized"]["metric"] == 0.7 and record["restoration"].startswith("1 layer group")
    assert "in-sample" in record["validation"]
    validator.calls = validator.calls[:2]  # a validation pattern NNCF 3.x does not produce
    record = _record(validator, 10, gate, prof)
    assert record["float"] is None and record["restoration"].startswith("unknown")
    record.update(calibration_images=6, layers_in_float="0 of 1")
    assert "unknown" in describe_quantization(record)


def _small(**changes):
    return load_profile("openvino-int8").replace(**{"calib_size": 6, "allow_small_calib": True, "parity_n": 5,
                                                    **changes})


@pytest.mark.slow
def test_without_labels_plain_nncf_runs_and_says_so(tiny_checkpoint: Path, synth_root: Path,
                                                     tmp_path: Path) -> None:
    from edgeleuk.io.modelfile import read_model_meta

    result = export_model(tiny_checkpoint, tmp_path / "nolabels.xml", _small(), data=synth_root / "final")
    assert not result.gate.labelled and result.gate.passed
    assert result.quantization["method"] == "nncf.quantize"
    assert result.quantization["accuracy_control"] == "off (no labels)"
    assert "accuracy control: off (no labels)" in result.describe()
    _, export = read_model_meta(result.path)
    assert export["quantization"]["accuracy_control"] == "off (no labels)"


@pytest.mark.slow
def test_profile_can_turn_accuracy_control_off(tiny_checkpoint: Path, synth_root: Path, tmp_path: Path) -> None:
    result = export_model(tiny_checkpoint, tmp_path / "off.xml", _small(accuracy_control=False), data=synth_root)
    assert result.gate.labelled
    assert result.quantization["method"] == "nncf.quantize"
    assert result.quantization["accuracy_control"] == "off (off in the profile)"
    # Without accuracy control nothing is restored: of the tiny net's 25 weighted layers only the
    # squeeze-excitation 1x1 convolutions (2 in each of 4 stages), which NNCF's plain quantize
    # leaves in float, keep float weights.
    assert result.quantization["layers_in_float"] == "8 of 25"


@pytest.mark.parametrize(("changes", "match"), [
    ({"accuracy_control_n": 0}, ">= 1"),
    ({"max_f1_drop": None}, "max_f1_drop"),
    ({"min_agreement": 1.0}, "min_agreement"),
])
def test_accuracy_control_settings_are_checked(changes: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_profile("openvino-int8").replace(**changes)
    with pytest.raises(ConfigError, match="int8 only"):
        load_profile("cpu-fp32").replace(accuracy_control=True)
