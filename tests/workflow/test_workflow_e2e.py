"""The workflow on a real exported model: export -> calibrate -> predict/watch -> report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def exported(tiny_onnx: Path) -> Path:
    """The session's shared cpu-fp32 export (conftest.py); calibrate writes to its own --out."""
    return tiny_onnx


def test_calibrate_watch_report_on_exported_tiny_model(
    tmp_path: Path, exported: Path, synth_root: Path
) -> None:
    from edgeleuk.io.data import discover
    from edgeleuk.io.modelfile import read_model_meta
    from edgeleuk.workflow.calibrate import calibrate_model
    from edgeleuk.workflow.predict import PredictOptions, predict
    from edgeleuk.workflow.report import write_report
    from edgeleuk.workflow.watch import watch_folder

    calibrated = tmp_path / "calibrated.onnx"
    result = calibrate_model(exported, data=synth_root, sensitivity=0.9, out=calibrated, backend="cpu",
                             allow_small=True)
    assert result.chosen.sensitivity >= 0.9
    meta, export = read_model_meta(calibrated)
    assert meta.threshold == result.chosen.threshold and meta.threshold_source.startswith("calibrated")
    assert export == read_model_meta(exported)[1]  # the export record is kept as it was

    # predict takes the calibrated threshold from the model by default.
    summary = predict(
        synth_root / "prelim", calibrated, tmp_path / "p.csv", PredictOptions(backend="cpu", progress=False)
    )
    assert summary.threshold == pytest.approx(result.chosen.threshold)
    assert summary.threshold_source.startswith("calibrated")

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    train = discover(synth_root).split("train")[:4]
    for rec in train:
        shutil.copy(rec.path, incoming / rec.path.name)
    watched = tmp_path / "watch.csv"
    session = watch_folder(
        incoming, model=calibrated, out=watched, backend="cpu", interval=0.05, max_idle=0.3
    )
    assert session.classified == 4

    html = write_report(watched, out=tmp_path / "r.html", images=incoming).read_text(encoding="utf-8")
    for rec in train:
        assert f'<td class="l">{rec.subject}</td>' in html
    assert "true class" in html  # C-NMC names carry the class, so watch filled true_label
    assert "not a diagnostic device" in html
