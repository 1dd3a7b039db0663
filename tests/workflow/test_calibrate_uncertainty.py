"""``calibrate`` states its uncertainty: exact intervals, counts, refusals (edgeleuk.workflow.calibrate)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner
from workflow_support import build_brightness_onnx, grey_for_prob, write_cell

from edgeleuk.cli import app
from edgeleuk.core.errors import CalibrationRefused, DataError
from edgeleuk.core.meta import Calibration, ModelMeta
from edgeleuk.evaluation.metrics import clopper_pearson
from edgeleuk.info import describe_model_file
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.workflow.calibrate import calibrate_model

runner = CliRunner()


def _cells(root: Path, pos: list[float], neg: list[float], subjects: int) -> Path:
    """C-NMC training layout; cell i of a class belongs to subject ``i % subjects``."""
    for cls, probs in (("all", pos), ("hem", neg)):
        for i, p in enumerate(probs):
            subject = f"{i % subjects + 1}" if cls == "all" else f"H{i % subjects + 1}"
            write_cell(root / "training_data" / "fold_0" / cls / f"UID_{subject}_{i}_1_{cls}.bmp", grey_for_prob(p))
    return root


def _spread(n: int, low: float, high: float) -> list[float]:
    return [low + (high - low) * i / (n - 1) for i in range(n)]


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return build_brightness_onnx(tmp_path / "bright.onnx")


@pytest.fixture(scope="module")
def enough(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 ALL + 32 HEM cells from 6 subjects each: above the floor; two ALL cells score low."""
    pos = [0.2, 0.3] + _spread(30, 0.55, 0.97)
    neg = _spread(30, 0.03, 0.45) + [0.6, 0.7]
    return _cells(tmp_path_factory.mktemp("enough"), pos, neg, subjects=6)


def test_intervals_and_counts_are_reported_and_stored(tmp_path: Path, model: Path, enough: Path) -> None:
    out = tmp_path / "c.onnx"
    result = calibrate_model(model, data=enough, sensitivity=0.9, out=out, backend="cpu")
    op = result.chosen
    assert (op.tp + op.fn, op.tn + op.fp) == (32, 32)
    text = result.describe()
    low, high = clopper_pearson(op.tp, op.tp + op.fn)
    assert f"sensitivity {op.sensitivity:.4f} [{low:.4f}, {high:.4f}]" in text
    assert "Clopper-Pearson" in text and "subjects: 6 ALL, 6 HEM" in text and "SMALL" not in text
    record = read_model_meta(out)[0].extra["calibration"]
    assert record["sensitivity_ci"] == pytest.approx([low, high])
    assert record["specificity_ci"] == pytest.approx(list(clopper_pearson(op.tn, op.tn + op.fp)))
    assert record["confidence"] == 0.95 and record["small_sample"] is False
    assert record["counts"] == {"tp": op.tp, "fn": op.fn, "tn": op.tn, "fp": op.fp}
    assert record["subjects"] == {"all": 6, "hem": 6}
    per = record["per_subject"]
    assert len(per) == 12 and sum(s["cells"] for s in per.values()) == 64
    assert per["H1"]["class"] == "hem" and per["1"]["class"] == "all"
    assert sum(s["called_all"] for s in per.values() if s["class"] == "all") == op.tp
    # info shows the interval and the counts
    shown = describe_model_file(out)
    assert f"({op.tp}" not in shown  # (the counts are given per class, below)
    assert f"95% CI {low:.3f}-{high:.3f}" in shown and "32 ALL + 32 HEM cells from 6 ALL + 6 HEM subjects" in shown


def test_a_threshold_with_specificity_zero_is_refused_and_nothing_written(tmp_path: Path, model: Path) -> None:
    # A lab's first try: 16 ALL + 8 HEM; one ALL cell scores below every HEM cell, so 100 %
    # sensitivity needs a threshold calling every cell ALL.
    root = _cells(tmp_path / "d", [0.01] + _spread(15, 0.6, 0.95), _spread(8, 0.1, 0.5), subjects=2)
    out = tmp_path / "c.onnx"
    with pytest.raises(CalibrationRefused, match="specificity 0"):
        calibrate_model(model, data=root, sensitivity=1.0, out=out, backend="cpu", allow_small=True)
    assert not out.exists()
    res = runner.invoke(app, ["calibrate", "-m", str(model), "--data", str(root), "--out", str(out),
                              "--sensitivity", "1.0", "--backend", "cpu", "--allow-small"])
    assert res.exit_code == 1 and "Nothing was written" in res.output and not out.exists()
    # A model that scores ALL below HEM: the best specificity at target 0 calls no cell ALL.
    upside_down = _cells(tmp_path / "u", _spread(8, 0.1, 0.3), _spread(8, 0.5, 0.9), subjects=2)
    with pytest.raises(CalibrationRefused, match="with sensitivity 0"):
        calibrate_model(model, data=upside_down, sensitivity=0.0, out=out, backend="cpu", allow_small=True)
    assert not out.exists()


def test_small_samples_need_allow_small_and_say_so(tmp_path: Path, model: Path) -> None:
    root = _cells(tmp_path / "d", _spread(16, 0.3, 0.95), _spread(8, 0.05, 0.6), subjects=2)
    out = tmp_path / "c.onnx"
    with pytest.raises(DataError, match=r"only 16 ALL cells \(fewer than 30\).*--allow-small"):
        calibrate_model(model, data=root, sensitivity=0.9, out=out, backend="cpu")
    assert not out.exists()
    res = runner.invoke(app, ["calibrate", "-m", str(model), "--data", str(root), "--out", str(out),
                              "--backend", "cpu"])
    assert res.exit_code == 2 and "--allow-small" in res.output and not out.exists()
    res = runner.invoke(app, ["calibrate", "-m", str(model), "--data", str(root), "--out", str(out),
                              "--backend", "cpu", "--allow-small"])
    assert res.exit_code == 0, res.output
    assert "SMALL SAMPLE" in res.stdout and "2 ALL subjects (fewer than 5)" in res.stdout
    calibration = Calibration.from_meta(read_model_meta(out)[0])
    assert calibration is not None and calibration.small_sample
    assert "small sample" in calibration.summary()


def test_enough_cells_but_few_subjects_is_small(tmp_path: Path, model: Path) -> None:
    root = _cells(tmp_path / "d", _spread(30, 0.5, 0.95), _spread(30, 0.05, 0.45), subjects=4)
    with pytest.raises(DataError, match=r"only 4 ALL subjects \(fewer than 5\), 4 HEM subjects"):
        calibrate_model(model, data=root, sensitivity=0.9, out=tmp_path / "c.onnx", backend="cpu")


def test_a_calibration_record_without_intervals_still_reads() -> None:
    old = {"target_sensitivity": 0.95, "sensitivity": 0.95, "specificity": 0.7, "n_all": 20, "n_hem": 20,
           "data": "/d", "split": "train", "date": "2025-01-01"}
    cal = Calibration.from_meta(ModelMeta(extra={"calibration": old}))
    assert cal is not None and cal.sensitivity_ci is None and cal.subjects_all is None
    assert cal.summary() == ("sensitivity 0.950 (no interval recorded), specificity 0.700 (no interval recorded); "
                             "20 ALL + 20 HEM cells")
    assert Calibration.from_meta(ModelMeta()) is None
    assert Calibration.from_dict("junk") is None
