"""``edgeleuk report``: self-contained HTML from a predictions CSV (edgeleuk.workflow.report)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from workflow_support import build_brightness_onnx, write_cell

from edgeleuk.cli import app
from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.workflow.report import write_report
from edgeleuk.workflow.report_data import estimate_threshold, load_rows, summarise_subjects

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> tuple[Path, Path]:
    """``predict`` on the synthetic prelim folder (true labels known) plus one error row."""
    from edgeleuk.workflow.predict import PredictOptions, predict

    tmp = tmp_path_factory.mktemp("report")
    # Centred on the synthetic cells' brightness so both calls occur.
    model = build_brightness_onnx(tmp / "bright.onnx", gain=60.0, centre=26.0)
    folder = synth_root / "prelim"
    out = tmp / "predictions.csv"
    predict(folder, model, out, PredictOptions(backend="cpu", progress=False))
    with open(out, newline="", encoding="utf-8") as fh:
        first = next(csv.DictReader(fh))
    with open(out, "a", newline="", encoding="utf-8") as fh:  # a failed file, as predict writes one
        csv.writer(fh, lineterminator="\n").writerow(
            ["gone.bmp", "error", "file not found", "", "", "", "", "", "", "",
             *(first[c] for c in ("model", "threshold", "tta", "engine", "time_utc"))]
        )
    return out, folder


def _subjects(csv_path: Path) -> set[str]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return {r["subject"] for r in csv.DictReader(fh) if r["subject"]}


def test_report_lists_every_subject_and_is_self_contained(tmp_path: Path, predicted) -> None:
    csv_path, folder = predicted
    html = write_report(csv_path, out=tmp_path / "report.html", images=folder).read_text(encoding="utf-8")
    subjects = _subjects(csv_path)
    assert len(subjects) >= 2
    for s in subjects:
        assert f'<td class="l">{s}</td>' in html
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(script|link|iframe)\b", html)
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert "SYNTHETIC DATA" in html and "not a diagnostic device" in html
    assert "true class" in html and "<svg" in html and "threshold" in html
    assert "gone.bmp" in html and "file not found" in html


def test_subject_summary_counts_calls_and_accuracy(predicted) -> None:
    csv_path, _ = predicted
    rows = load_rows(csv_path)
    by_name = {s.subject: s for s in summarise_subjects(rows)}
    for name, s in by_name.items():
        mine = [r for r in rows if (r.subject or "(unknown)") == name and r.ok]
        assert s.cells == len(mine)
        assert s.called_all == sum(bool(r.called_all) for r in mine)
        if mine:
            assert s.mean_prob == pytest.approx(np.mean([r.prob for r in mine]))
            assert s.correct == sum(r.called_all == bool(r.truth) for r in mine)
        else:
            assert np.isnan(s.mean_prob) and s.correct is None
    assert by_name["(unknown)"].errors == 1


def test_threshold_is_bracketed_by_the_calls(predicted) -> None:
    rows = load_rows(predicted[0])
    est = estimate_threshold(rows)
    assert est.low is not None and est.high is not None and est.low < est.high
    assert all((r.prob >= est.high) == r.called_all for r in rows if r.ok)
    assert all((r.prob <= est.low) == (not r.called_all) for r in rows if r.ok)
    assert "between" in est.describe()
    given = estimate_threshold(rows, 0.3)
    assert (given.low, given.high, given.describe()) == (0.3, 0.3, "0.3000")


def test_report_without_truth_or_synthetic_marker(tmp_path: Path) -> None:
    folder = tmp_path / "cells"
    for i, grey in enumerate([30, 90, 200]):
        write_cell(folder / f"UID_{i + 1}_1_1.bmp", grey)
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(
        "path,status,error,prob_all,label,subject,adjustment\n"
        "UID_1_1_1.bmp,ok,,0.100000,hem,1,\n"
        "UID_2_1_1.bmp,ok,,0.700000,all,2,\n"
        "UID_3_1_1.bmp,ok,,0.900000,all,3,\n",
        encoding="utf-8",
    )
    html = write_report(csv_path, out=tmp_path / "r.html", images=folder).read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" not in html and "true class" not in html
    assert html.count("data:image/jpeg;base64,") >= 3
    for s in ("1", "2", "3"):
        assert f'<td class="l">{s}</td>' in html


def test_images_not_found_says_how_to_fix_and_still_flags_synthetic(
    tmp_path: Path, predicted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in the demo: the CSV sits above the synthetic data, its paths are relative to a sub-folder.
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "SYNTHETIC.txt").write_text("synthetic\n", encoding="utf-8")
    shutil.copy(predicted[0], run / "predictions.csv")
    monkeypatch.chdir(tmp_path)
    html = write_report(run / "predictions.csv", out=run / "r.html").read_text(encoding="utf-8")
    assert "--images FOLDER" in html and "data:image/jpeg" not in html
    assert "SYNTHETIC DATA" in html


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        write_report(tmp_path / "none.csv", out=tmp_path / "r.html")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(UsageError, match="missing column"):
        write_report(other, out=tmp_path / "r.html")
    empty = tmp_path / "empty.csv"
    empty.write_text("path,status,error,prob_all,label,subject,adjustment\n", encoding="utf-8")
    with pytest.raises(DataError, match="no predictions"):
        write_report(empty, out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report(tmp_path: Path, predicted) -> None:
    csv_path, folder = predicted
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(csv_path), "--out", str(out), "--images", str(folder)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"wrote {out}"
    html = out.read_text(encoding="utf-8")
    # What the page must hold, counted from the CSV (a size bound passed for a page of CSS alone).
    rows = load_rows(csv_path)
    ok = [r for r in rows if r.ok]
    n_all = sum(bool(r.called_all) for r in ok)
    assert html.count("data:image/jpeg;base64,") == min(12, n_all) + min(12, len(ok))
    assert html.count('<rect x=') >= 2 and html.count("<svg") == 1
    assert all(f'<td class="l">{s}</td>' in html for s in _subjects(csv_path))
    assert f"<tr><th class=\"l\">cells classified</th><td>{len(ok)} of {len(rows)}</td></tr>" in html


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(tmp_path: Path, predicted) -> None:
    cv2 = pytest.importorskip("cv2")
    csv_path, folder = predicted
    html = write_report(csv_path, out=tmp_path / "report.html", images=folder)
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1200,1600",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1200)
    not_white = (img < 235).any(axis=2)
    assert not_white.mean() > 0.05  # text, tables, histogram and thumbnails, not a blank page
    red = (img[..., 2] > 150) & (img[..., 1] < 90) & (img[..., 0] < 90)
    assert red.sum() > 200  # the histogram's ALL bars and the share-ALL bars were drawn
