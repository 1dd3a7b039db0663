"""``edgeleuk card``: a model card from the model file's metadata (edgeleuk.workflow.card)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner
from workflow_support import build_brightness_onnx

from edgeleuk.cli import app
from edgeleuk.core.meta import TRAINING_KEY, ModelMeta
from edgeleuk.evaluation.metrics import clopper_pearson
from edgeleuk.io.files import sha256_file
from edgeleuk.workflow.card import UNKNOWN, build_card, write_card

runner = CliRunner()
PRE_LAYOUT = Path(__file__).resolve().parents[1] / "data" / "pre-layout"
CHROMIUM = shutil.which("chromium")
CALIBRATION = {"target_sensitivity": 0.95, "sensitivity": 0.95, "specificity": 0.75, "n_all": 40, "n_hem": 32,
               "sensitivity_ci": list(clopper_pearson(38, 40)), "specificity_ci": list(clopper_pearson(24, 32)),
               "confidence": 0.95, "subjects": {"all": 6, "hem": 5}, "small_sample": False, "data": "/lab/cal",
               "split": "prelim", "date": "2026-01-02"}
TRAINING = {"recipe": "smoke", "description": "tiny", "seed": 3, "epochs": 1, "initialisation": "random",
            "smoke": True, "data": {"fingerprint": "f00d" * 4, "synthetic": True,
                                    "train": {"cells": {"all": 5, "hem": 3}, "subjects": {"all": 3, "hem": 2}},
                                    "val": {"cells": {"all": 4, "hem": 2}, "subjects": {"all": 2, "hem": 1}}},
            "versions": {"edgeleuk": "0.1.0", "torch": "2.6.0", "timm": "1.0.0"}}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("- ")]


def test_card_of_a_random_weight_export_says_so_first(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "card.md"
    res = runner.invoke(app, ["card", "-m", str(tiny_onnx), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("UNKNOWN TRAINING") and f"wrote {out}" in res.stdout
    text = out.read_text(encoding="utf-8")
    limits = text.split("## Limitations")[1].split("##")[0]
    assert _lines(limits)[0].startswith("- UNKNOWN TRAINING")
    assert "not a medical device" in text and "## Intended use" in text
    assert f"model id: `{sha256_file(tiny_onnx)[:12]}`" in text
    for engine in ("cpu", "openvino"):  # every gate engine with its measured figures
        assert f"| {engine} | passed |" in text
    assert text.count("| 100.00% |") == 2 and "max \\|logit delta\\|" in text
    assert f"| epochs | {UNKNOWN} |" in text and "predates training records" in text
    assert "Not calibrated" in text and "| profile | cpu-fp32:" in text
    assert "| this card written with | edgeleuk" in text and "onnxruntime" in text


def test_html_card_escapes_and_shows_the_calibration_intervals(tmp_path: Path) -> None:
    meta = ModelMeta(arch="seresnext_tiny", recipe="smoke", seed=3, threshold=0.41,
                     threshold_source="<script>alert(1)</script>",
                     extra={"calibration": CALIBRATION, TRAINING_KEY: TRAINING, "epoch": 0})
    model = build_brightness_onnx(tmp_path / "m.onnx", meta)
    path, card = write_card(model, fmt="html")
    assert path == tmp_path / "m.card.html"
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    low, high = CALIBRATION["sensitivity_ci"]
    assert f"0.950 (95% CI {low:.3f}-{high:.3f})" in html and "40 ALL + 32 HEM cells from 6 ALL + 5 HEM" in html
    assert card.voiding[0].startswith("TRAINED ON SYNTHETIC CELLS") and card.voiding[1].startswith("SMOKE MODEL")
    assert card.limitations[:2] == card.voiding and "Not calibrated" not in " ".join(card.limitations)
    md = write_card(model, out=tmp_path / "m.md")[0].read_text(encoding="utf-8")
    for row in ("| recipe | smoke |", "| seed | 3 |", "| epochs | 1 |", "| best epoch | 1 |",
                "| training cells | 5 ALL + 3 HEM cells from 3 ALL + 2 HEM subjects |",
                "| data index fingerprint | f00df00df00df00d |",
                "| trained with | edgeleuk 0.1.0, timm 1.0.0, torch 2.6.0 |"):
        assert row in md, row


def test_training_records_what_the_card_needs(synth_root: Path) -> None:
    pytest.importorskip("torch")
    from edgeleuk.training.dataset import select_records
    from edgeleuk.training.loop import training_record
    from edgeleuk.training.recipe import load_recipe

    recipe = load_recipe("smoke")
    splits = select_records(synth_root, recipe)
    record = training_record(recipe, splits)
    assert record["smoke"] is True and record["initialisation"] == "random" and record["epochs"] == 1
    assert record["data"]["synthetic"] is True and record["data"]["fingerprint"] == splits.fingerprint
    cells = record["data"]["train"]["cells"]
    assert cells["all"] + cells["hem"] == len(splits.train)
    assert record["data"]["val"]["subjects"]["all"] == len({r.subject for r in splits.val if r.label == 1})
    assert record["versions"]["torch"] and not load_recipe("paper").smoke


def test_an_old_checkpoint_still_exports_and_its_card_says_what_is_unknown(
    tmp_path: Path, synth_root: Path
) -> None:
    pytest.importorskip("torch")
    from edgeleuk.exporting import export_model, load_profile

    ckpt = tmp_path / "tiny.pt"
    with gzip.open(PRE_LAYOUT / "tiny.pt.gz") as src, open(ckpt, "wb") as dst:
        shutil.copyfileobj(src, dst)
    profile = load_profile("cpu-fp32").replace(parity_n=6, source_date_epoch=0)
    result = export_model(ckpt, tmp_path / "old.onnx", profile, data=synth_root)
    card = build_card(result.path)
    assert card.voiding[0].startswith("UNKNOWN TRAINING") and card.threshold == 0.42
    text = write_card(result.path)[0].read_text(encoding="utf-8")
    assert "| recipe | pre-layout |" in text and f"| data index fingerprint | {UNKNOWN} |" in text
    assert f"| trained with | {UNKNOWN} |" in text and "| exported with | edgeleuk" in text and "torch" in text


def test_bad_card_requests_exit_2(tmp_path: Path, tiny_onnx: Path) -> None:
    res = runner.invoke(app, ["card", "-m", str(tmp_path / "nope.onnx")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["card", "-m", str(tiny_onnx), "--format", "pdf"])
    assert res.exit_code == 2


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium on PATH (apt-get install chromium)")
def test_html_card_renders_in_headless_chromium(tmp_path: Path, tiny_onnx: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    html, _ = write_card(tiny_onnx, out=tmp_path / "card.html", fmt="html")
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1600",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1200)
    assert (img < 235).any(axis=2).mean() > 0.05  # text and tables, not a blank page
    # the first limitation's amber banner (#fff3cd with a #e0a800 border) is drawn near the top
    amber = (img[..., 2] > 200) & (img[..., 1] > 150) & (img[..., 1] < 190) & (img[..., 0] < 40)
    assert amber[:400].sum() > 500


def test_card_and_info_say_where_the_trust_ranges_come_from(tmp_path: Path) -> None:
    import numpy as np

    from edgeleuk.core.trust import DEFAULT_QUALITY, OodModel
    from edgeleuk.info import describe_model_file

    old = build_brightness_onnx(tmp_path / "old.onnx")
    md = write_card(old, out=tmp_path / "old.md")[0].read_text(encoding="utf-8")
    assert "## When not to trust a call" in md and "| quality ranges | defaults (model predates QC) |" in md
    lo, hi = DEFAULT_QUALITY.focus
    assert f"| focus | {lo:.4g} .. {hi:.4g} |" in md and "| out-of-distribution | none" in md
    assert "quality:       defaults (model predates QC)" in describe_model_file(old)

    ood = OodModel(mean=np.zeros(8), components=np.eye(8)[:2], variances=np.ones(2), residual_var=1.0,
                   threshold=4.5, percentile=99.5, n_cells=64, dim=8)
    meta = ModelMeta(arch="seresnext_tiny", quality=DEFAULT_QUALITY.replace(focus=(50.0, 900.0),
                                                                          source="calibrate:64 cells"), ood=ood)
    new = build_brightness_onnx(tmp_path / "new.onnx", meta)
    md = write_card(new, out=tmp_path / "new.md")[0].read_text(encoding="utf-8")
    assert "| quality ranges | fitted (calibrate:64 cells) |" in md and "| focus | 50 .. 900 |" in md
    assert "PCA 2 of 8 dims" in md and "percentile 99.5 of 64 calibration cells" in md
    text = describe_model_file(new)
    assert "quality:       fitted (calibrate:64 cells)" in text and "ood:           PCA 2 of 8 dims" in text
