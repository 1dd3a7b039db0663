"""``edgeleuk calibrate``: threshold for a target sensitivity, written into the model (edgeleuk.workflow.calibrate)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from workflow_support import (
    build_brightness_ir,
    build_brightness_onnx,
    grey_for_prob,
    prob_for_grey,
    write_cell,
)

from edgeleuk.cli import app
from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.io.modelwrite import write_model_with_meta
from edgeleuk.workflow.calibrate import calibrate_model
from edgeleuk.workflow.stagecal import Scores
from edgeleuk.workflow.threshold import select_threshold

# 20 ALL and 20 HEM cells; the lowest ALL cell scores below several HEM cells,
# so 95% sensitivity (19/20) buys much better specificity than 100%.
POS_PROBS = [0.2] + list(np.linspace(0.55, 0.98, 19))
NEG_PROBS = list(np.linspace(0.03, 0.45, 16)) + [0.5, 0.6, 0.3, 0.25]


def _labelled(root: Path, pos: list[float], neg: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """C-NMC training layout with cells of chosen probability; returns the exact (scores, labels)."""
    scores, labels = [], []
    for cls, probs, label in (("all", pos, 1), ("hem", neg, 0)):
        for i, p in enumerate(probs):
            subject = f"{i % 3 + 1}" if label else f"H{i % 3 + 1}"
            grey = grey_for_prob(p)
            write_cell(root / "training_data" / "fold_0" / cls / f"UID_{subject}_{i}_1_{cls}.bmp", grey)
            scores.append(prob_for_grey(grey))
            labels.append(label)
    return np.array(scores), np.array(labels)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("labelled")
    scores, labels = _labelled(root, POS_PROBS, NEG_PROBS)
    return root, scores, labels


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return build_brightness_onnx(tmp_path / "bright.onnx")


def test_calibrated_onnx_carries_threshold_and_provenance(tmp_path: Path, model: Path, data) -> None:
    root, scores, labels = data
    out = tmp_path / "calibrated.onnx"
    result = calibrate_model(model, data=root, sensitivity=0.95, out=out, backend="cpu", allow_small=True)
    expected = select_threshold(scores, labels, 0.95)
    assert (result.chosen.tp, result.chosen.fn) == (19, 1)
    assert result.chosen.fp == expected.fp
    assert result.chosen.threshold == pytest.approx(expected.threshold, abs=1e-6)
    assert result.previous.threshold == 0.5 and result.split == "train"
    meta, export = read_model_meta(out)
    assert meta.threshold == result.chosen.threshold
    assert meta.threshold_source.startswith("calibrated: sensitivity>=0.95 on ")
    assert "n=40 (20 ALL, 20 HEM)" in meta.threshold_source
    assert meta.extra["calibration"]["previous_threshold"] == 0.5
    assert export["profile"] == "hand-built"  # the rest of the metadata is kept
    assert read_model_meta(model)[0].threshold == 0.5  # the source model is untouched
    text = result.describe()
    assert "calibrated" in text and "before" in text and "weighted F1" in text and "default" in text


def test_runtime_uses_the_calibrated_threshold(tmp_path: Path, model: Path, data) -> None:
    from edgeleuk.runtime.classifier import Classifier

    root, _, _ = data
    out = tmp_path / "calibrated.onnx"
    result = calibrate_model(model, data=root, sensitivity=0.95, out=out, backend="cpu", allow_small=True)
    clf = Classifier.load(out, backend="cpu")
    assert clf.threshold == pytest.approx(result.chosen.threshold)
    paths = sorted((root / "training_data" / "fold_0" / "all").glob("*.bmp"))
    called = [p.label for p in clf.predict_paths(paths)]
    assert called.count("all") == 19


def test_calibration_prefers_the_prelim_split(tmp_path: Path, model: Path, synth_root: Path) -> None:
    from edgeleuk.io.data import discover

    model = build_brightness_onnx(tmp_path / "centred.onnx", gain=60.0, centre=26.0)  # centred: calls of both kinds
    result = calibrate_model(model, data=synth_root, sensitivity=0.7, out=tmp_path / "c.onnx", backend="cpu",
                             allow_small=True)
    assert result.split == "prelim"
    n = result.chosen.tp + result.chosen.fn + result.chosen.tn + result.chosen.fp
    assert n == len(discover(synth_root).split("prelim"))
    assert result.chosen.sensitivity >= 0.7


def test_one_class_data_is_refused_and_nothing_written(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "only-all"
    _labelled(root, [0.2, 0.6, 0.9], [])
    out = tmp_path / "c.onnx"
    with pytest.raises(DataError, match="both ALL and HEM"):
        calibrate_model(model, data=root, sensitivity=0.95, out=out, backend="cpu", allow_small=True)
    assert not out.exists()


def test_openvino_ir_is_rewritten_with_rt_info(tmp_path: Path, model: Path, data) -> None:
    pytest.importorskip("openvino")
    root, _, _ = data
    xml = build_brightness_ir(model, tmp_path / "bright.xml")
    out_dir = tmp_path / "out"
    out = out_dir / "calibrated.xml"
    result = calibrate_model(xml, data=root, sensitivity=1.0, out=out, backend="openvino", allow_small=True)
    assert result.chosen.fn == 0
    assert read_model_meta(out)[0].threshold == result.chosen.threshold
    assert sorted(p.name for p in out_dir.iterdir()) == ["calibrated.bin", "calibrated.xml"]  # no temp left


def test_output_suffix_must_match(tmp_path: Path, model: Path) -> None:
    with pytest.raises(UsageError, match="same suffix"):
        write_model_with_meta(model, tmp_path / "x.xml", ModelMeta(threshold=0.3))


def test_missing_onnx_package_names_the_fix(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(UsageError, match="needs the onnx package: pip install"):
        write_model_with_meta(model, tmp_path / "x.onnx", ModelMeta(threshold=0.3))


def test_cli_prints_both_operating_points_and_maps_errors(tmp_path: Path, model: Path, data) -> None:
    root, _, _ = data
    runner = CliRunner()
    out = tmp_path / "c.onnx"
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--model",
            str(model),
            "--data",
            str(root),
            "--sensitivity",
            "0.95",
            "--out",
            str(out),
            "--backend",
            "cpu",
            "--allow-small",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "calibrated" in res.output and "before" in res.output and out.exists()
    one_class = tmp_path / "hem-only"
    _labelled(one_class, [], [0.1, 0.2])
    res = runner.invoke(
        app, ["calibrate", "-m", str(model), "--data", str(one_class), "--out", str(tmp_path / "d.onnx")]
    )
    assert res.exit_code == 2
    assert "both ALL and HEM" in res.output


def test_rewritten_models_are_fsynced_with_their_folder(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    xml = build_brightness_ir(model, tmp_path / "bright.xml")
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1]
    )
    out_dir = tmp_path / "out"
    write_model_with_meta(model, out_dir / "c.onnx", ModelMeta(threshold=0.3))
    write_model_with_meta(xml, out_dir / "c.xml", ModelMeta(threshold=0.3))
    names = [Path(p).name for p in synced]
    assert "c.onnx" in names  # the ONNX copy before its rename
    assert sum(n in ("c.xml", "c.bin") for n in names) >= 2  # both IR files, in their temporary folder
    assert synced.count(str(out_dir)) >= 2  # and the folder after each rename


def test_saturated_scores_give_no_degenerate_threshold(
    tmp_path: Path, model: Path, data, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _, _ = data
    # An ALL cell the model scores exactly 0.0: full sensitivity would need threshold 0, which
    # calls everything ALL and which no model file may carry.
    saturated = Scores(np.array([1.0, 0.0, 0.0]), np.array([1, 1, 0]), None, 0, no_views="test")
    monkeypatch.setattr("edgeleuk.workflow.calibrate.score_labelled", lambda *args: saturated)
    out = tmp_path / "c.onnx"
    with pytest.raises(DataError, match="outside \\(0, 1\\)"):
        calibrate_model(model, data=root, sensitivity=1.0, out=out, backend="cpu", allow_small=True)
    assert not out.exists()


def test_calibrate_keeps_an_owner_only_model_owner_only(tmp_path: Path, model: Path, data) -> None:
    import os

    root, _, _ = data
    os.chmod(model, 0o600)
    calibrate_model(model, data=root, sensitivity=0.95, out=model, backend="cpu", allow_small=True)
    assert model.stat().st_mode & 0o777 == 0o600
