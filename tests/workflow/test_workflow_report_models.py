"""``edgeleuk report`` names the models behind the calls, splits mixed files, reads images only below --images.

The rows' provenance columns (``model``, ``threshold``, ``tta``, ``engine``, ``time_utc``) and the
``<csv>.provenance.json`` sidecar are written here by hand, as ``predict`` and ``watch`` write them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner
from workflow_support import build_brightness_onnx, write_cell

from edgeleuk import __version__
from edgeleuk.cli import app
from edgeleuk.evaluation.metrics import clopper_pearson
from edgeleuk.workflow.card import build_card
from edgeleuk.workflow.report import NO_IMAGES, build_page, write_report

MODEL_A, MODEL_B = "a1b2c3d4e5f6", "0f9e8d7c6b5a"
PROVENANCE = ("model", "threshold", "tta", "engine", "time_utc")
CAL_A = {"target_sensitivity": 0.95, "sensitivity": 0.95, "specificity": 0.8, "n_all": 40, "n_hem": 30,
         "sensitivity_ci": list(clopper_pearson(38, 40)), "specificity_ci": list(clopper_pearson(24, 30)),
         "confidence": 0.95, "subjects": {"all": 6, "hem": 5}, "data": "/lab/cal", "split": "prelim"}


def _entry(sha_id: str, file: str, threshold: float, calibration: dict | None) -> dict:
    return {"sha256": sha_id + "0" * 52, "file": file, "threshold": threshold, "class_names": {"0": "hem", "1": "all"},
            "export_profile": "cpu-fp32", "gates": {"passed": True, "checks": [{"engine": "cpu"}]},
            "calibration": calibration, "first_seen_utc": "2026-01-01T08:00:00Z", "engines": ["cpu-fp32"]}


def _write(folder: Path, name: str, rows: list[dict], models: dict | None, changes: list | None = None) -> Path:
    """A predictions CSV (provenance columns when the rows have them) and, with ``models``, its sidecar."""
    path = folder / name
    columns = list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    if models is not None:
        doc = {"format": "edgeleuk.provenance/1", "output": name, "edgeleuk_version": __version__,
               "host": "microscope-7", "models": models, "changes": changes or []}
        (folder / f"{name}.provenance.json").write_text(json.dumps(doc), encoding="utf-8")
    return path


def _row(name: str, prob: float, threshold: float, subject: str, model: str | None, t: str = "08:00") -> dict:
    row = {"path": name, "status": "ok", "error": "", "prob_all": f"{prob:.6f}",
           "label": "all" if prob >= threshold else "hem", "subject": subject, "adjustment": ""}
    if model is not None:
        row.update(model=model, threshold=f"{threshold:g}", tta="full", engine="cpu-fp32",
                   time_utc=f"2026-01-01T{t}:00Z")
    return row


@pytest.fixture()
def cells(tmp_path: Path) -> Path:
    folder = tmp_path / "cells"
    for i, grey in enumerate([30, 60, 90, 120, 160, 200, 230, 250]):
        write_cell(folder / f"{i + 1}.bmp", grey)
    return folder


def _mixed(tmp_path: Path) -> Path:
    """The restart in the field: a calibrated model (0.488) then the uncalibrated one (0.5) in one file."""
    probs = [0.1, 0.3, 0.488198, 0.7, 0.488265, 0.2, 0.9, 0.6]
    rows = [_row(f"{i + 1}.bmp", p, 0.488 if i < 4 else 0.5, str(i % 2 + 1), MODEL_A if i < 4 else MODEL_B,
                 t=f"08:0{i}") for i, p in enumerate(probs)]
    models = {MODEL_A: _entry(MODEL_A, "calibrated.onnx", 0.488, CAL_A),
              MODEL_B: _entry(MODEL_B, "model.onnx", 0.5, None)}
    changes = [{"time_utc": "2026-01-01T08:04:00Z", "from": MODEL_A, "to": MODEL_B, "from_threshold": 0.488,
                "to_threshold": 0.5, "reason": "--continue-with-new-model"}]
    return _write(tmp_path, "sess.csv", rows, models, changes)


def test_mixed_models_get_a_banner_and_figures_split_by_model(tmp_path: Path, cells: Path) -> None:
    html = write_report(_mixed(tmp_path), tmp_path / "r.html", images=cells).read_text(encoding="utf-8")
    assert "MIXED MODELS" in html and "--continue-with-new-model" in html
    assert f"Calls of model {MODEL_A} at threshold 0.488" in html
    assert f"Calls of model {MODEL_B} at threshold 0.5" in html
    assert html.count("<svg") == 2 and html.count("Closest to the threshold") == 2
    for text in ("calibrated.onnx", "model.onnx", f"edgeleuk {__version__}", "microscope-7"):
        assert text in html
    low, high = CAL_A["sensitivity_ci"]
    assert f"sensitivity 0.950 (95% CI {low:.3f}-{high:.3f})" in html and "6 ALL + 5 HEM subjects" in html
    # each part states its own exact threshold, read from the rows
    assert "0.4880" in html and "0.5000" in html and "between" not in html


def test_one_model_names_it_without_a_banner(tmp_path: Path, cells: Path) -> None:
    rows = [_row(f"{i + 1}.bmp", p, 0.488, "1", MODEL_A) for i, p in enumerate([0.2, 0.5, 0.9])]
    path = _write(tmp_path, "one.csv", rows, {MODEL_A: _entry(MODEL_A, "calibrated.onnx", 0.488, CAL_A)})
    page = build_page(path, images=cells)
    assert not page.mixed and [m.model_id for m in page.models] == [MODEL_A]
    assert page.models[0].thresholds == (0.488,) and page.models[0].engines == ("cpu-fp32",)
    html = write_report(path, tmp_path / "r.html", images=cells).read_text(encoding="utf-8")
    assert "MIXED" not in html and MODEL_A in html and "calibrated.onnx" in html and "95% CI" in html


def test_an_old_csv_without_provenance_says_unknown_model(tmp_path: Path, cells: Path) -> None:
    rows = [_row(f"{i + 1}.bmp", p, 0.5, "1", None) for i, p in enumerate([0.2, 0.7])]
    html = write_report(_write(tmp_path, "old.csv", rows, None), tmp_path / "r.html", images=cells).read_text()
    assert "unknown model" in html and "MIXED" not in html and "written before rows named their model" in html
    assert "between 0.200 and 0.700" in html  # the threshold is still bracketed by the calls


def test_without_images_it_warns_and_never_looks_elsewhere(
    tmp_path: Path, cells: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [_row(f"{i + 1}.bmp", p, 0.5, "1", MODEL_A) for i, p in enumerate([0.2, 0.7, 0.9])]
    path = _write(cells, "p.csv", rows, None)  # beside the images, and run from their folder
    monkeypatch.chdir(cells)
    with caplog.at_level(logging.WARNING):
        html = write_report(path, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No --images folder given" in caplog.text
    assert "No --images folder given" in html and "data:image" not in html and "image not found" not in html
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the CLI's log goes to stderr (pytest holds the root logger here)
        res = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "r2.html")])
    assert res.exit_code == 0 and NO_IMAGES in caplog.text


def test_links_out_of_the_images_folder_are_refused(tmp_path: Path, cells: Path) -> None:
    secret = write_cell(tmp_path / "private" / "secret.bmp", 240)
    os.symlink(secret, cells / "link.bmp")
    rows = [_row("link.bmp", 0.95, 0.5, "1", None), _row("8.bmp", 0.9, 0.5, "1", None)]
    page = build_page(_write(tmp_path, "p.csv", rows, None), images=cells)
    by_path = {c.row.path: c for c in page.confident}
    assert by_path["link.bmp"].uri is None and by_path["link.bmp"].missing == "refused: link leaves --images"
    assert by_path["8.bmp"].uri is not None


def test_values_from_the_file_are_escaped(tmp_path: Path, cells: Path) -> None:
    rows = [_row("1.bmp", 0.9, 0.5, "<b>7</b>", "<script>alert(1)</script>")]
    rows.append({**rows[0], "path": "<img src=x onerror=alert(2)>.bmp", "status": "error",
                 "error": "<script>alert(3)</script>", "prob_all": "", "label": ""})
    html = write_report(_write(tmp_path, "p.csv", rows, None), tmp_path / "r.html", images=cells).read_text()
    assert "<script" not in html and "<b>7" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;7&lt;/b&gt;" in html


def test_the_models_card_summary_is_embedded(tmp_path: Path, cells: Path) -> None:
    model = build_brightness_onnx(tmp_path / "bright.onnx")
    card = build_card(model)
    rows = [_row(f"{i + 1}.bmp", p, 0.5, "1", card.model_id) for i, p in enumerate([0.2, 0.9])]
    path = _write(tmp_path, "p.csv", rows, None)
    html = write_report(path, tmp_path / "r.html", images=cells, model=model).read_text(encoding="utf-8")
    assert "Model card summary" in html and card.limitations[0].split(":")[0] in html and "made none" not in html
    other = _write(tmp_path, "q.csv", [_row("1.bmp", 0.2, 0.5, "1", MODEL_B)], None)
    html = write_report(other, tmp_path / "r.html", images=cells, model=model).read_text(encoding="utf-8")
    assert f"made none of the rows in this file (they name {MODEL_B})" in html


def test_a_damaged_sidecar_is_reported_not_fatal(tmp_path: Path, cells: Path) -> None:
    path = _mixed(tmp_path)
    Path(f"{path}.provenance.json").write_text("{not json", encoding="utf-8")
    html = write_report(path, tmp_path / "r.html", images=cells).read_text(encoding="utf-8")
    assert "sess.csv.provenance.json cannot be read" in html and "MIXED MODELS" in html
    assert re.search(r"<td class=\"l\">unknown</td>", html)  # the files are unknown without the sidecar


def test_error_rows_without_a_model_do_not_make_a_file_mixed(tmp_path: Path, cells: Path) -> None:
    rows = [_row(f"{i + 1}.bmp", p, 0.5, "1", MODEL_A) for i, p in enumerate([0.2, 0.9])]
    rows.append({**{k: "" for k in rows[0]}, "path": "gone.bmp", "status": "error", "error": "file not found"})
    page = build_page(_write(tmp_path, "p.csv", rows, None), images=cells)
    assert not page.mixed and [m.model_id for m in page.models] == [MODEL_A]
    assert [r.path for r in page.errors] == ["gone.bmp"]
