"""The report's Flagged cells section and heatmap overlays, and ``predict --heatmaps`` writing them.

The overlay writer is a fake with the signature of ``edgeleuk.workflow.heatmaps.write_heatmaps``
(it writes a two-panel PNG for ALL calls and flagged cells), so the wiring is tested on its own.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_support import build_onnx, gray_cell, write_bmp
from workflow_support import Flagging

from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.workflow import heatmap_out
from edgeleuk.workflow.heatmap_out import INDEX, HeatmapSink
from edgeleuk.workflow.predict import PredictOptions, predict
from edgeleuk.workflow.report import write_report
from edgeleuk.workflow.report_data import load_rows


class WithMaps(Flagging):
    """:class:`Flagging` whose predictions also carry a class activation map."""

    def iter_predict(self, paths):
        for p in super().iter_predict(paths):
            yield p if not p.ok else dataclasses.replace(p, cam=np.full((300, 300), p.prob_all, np.float32))


def fake_writer(calls: list):
    """Writes ``<stem>.png`` (cell beside a red panel) for ALL calls and flagged cells, like the real chooser."""

    def write(folder, predictions, images, threshold):
        out = []
        for i, p in enumerate(predictions):
            calls.append(Path(str(p.path)).name)
            if p.prob_all >= threshold or p.flagged:
                side = np.concatenate([images[i][..., ::-1], np.full_like(images[i], (0, 0, 255))], axis=1)
                path = Path(folder) / f"{Path(str(p.path)).stem}.png"
                cv2.imwrite(str(path), side)
                out.append(path)
        return out

    return write


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("rep-model") / "tiny.onnx")


@pytest.fixture
def run(tmp_path: Path, model: Path, monkeypatch):
    """Predict a small folder with --qc strict and --heatmaps (fake writer); returns (csv, images, maps, calls)."""
    folder = tmp_path / "cells"
    for name, level in [("UID_7_1_1_all", 220), ("UID_7_2_1_all", 200), ("UID_7_3_1_blur_all", 40),
                        ("UID_H3_1_1_hem", 30), ("UID_H3_2_1_odd_hem", 230), ("UID_H3_3_1_hem", 60)]:
        write_bmp(folder / f"{name}.bmp", gray_cell(level))
    calls: list[str] = []
    monkeypatch.setattr(heatmap_out, "default_writer", lambda pre=None: fake_writer(calls))
    clf = WithMaps(Classifier.load(model, "cpu"))
    maps = tmp_path / "maps"
    summary = predict(folder, model, tmp_path / "p.csv", PredictOptions(progress=False, qc="strict", heatmaps=maps),
                      classifier=clf)
    assert "heatmaps: 4 overlay(s)" in summary.describe()
    assert all(r.prediction.cam is None for r in summary.rows)  # no map is kept once written
    return tmp_path / "p.csv", folder, maps, calls


def test_predict_heatmaps_writes_overlays_and_their_index(run) -> None:
    out, folder, maps, calls = run
    assert len(calls) == 6  # every cell went to the writer, which chose 4
    with open(maps / INDEX, newline="", encoding="utf-8") as fh:
        index = {r["path"]: r["heatmap"] for r in csv.DictReader(fh)}
    assert index == {f"{s}.bmp": f"{s}.png" for s in
                     ("UID_7_1_1_all", "UID_7_2_1_all", "UID_7_3_1_blur_all", "UID_H3_2_1_odd_hem")}
    assert all((maps / png).is_file() for png in index.values())


def test_report_has_a_flagged_section_with_reasons_scores_and_overlays(run, tmp_path: Path) -> None:
    out, folder, maps, _ = run
    html = write_report(out, out=tmp_path / "r.html", images=folder, heatmaps=maps).read_text(encoding="utf-8")
    section = html[html.index("<h2>Flagged cells (2)</h2>") : html.index("<h2>Files not classified")]
    assert "2 call(s) were withheld" in section and "review them" not in section
    assert '<td class="l"><code>blur</code></td><td>1</td>' in section
    assert '<td class="l"><code>ood</code></td><td>1</td>' in section
    assert "flagged: blur" in section and "flagged: ood" in section and "ood score 123.5" in section
    assert section.count('class="heat"') == 2 and section.count("WITHHELD") == 2
    table = section[section.index("Every flagged cell") :]
    assert table.count('<span class="held">withheld</span>') == 2 and "UID_H3_2_1_odd_hem.bmp" in table
    assert "<tr><th class=\"l\">cells classified</th><td>4 of 6</td></tr>" in html  # withheld: not classified
    assert "2: 2 without a label (--qc strict), left out of the figures above" in html
    # Withheld calls are no errors, and the subject table counts them apart.
    assert "None: every file was classified." in html
    assert re.search(r"<th>errors</th><th>flagged</th>", html)
    # Overlays next to the thumbnails of the ALL calls too (2 confident ALL cards + 2 flagged).
    assert html.count('class="heat"') >= 4
    rows = load_rows(out)
    assert [r.withheld for r in rows].count(True) == 2 and all(r.prob is not None for r in rows)


def test_report_without_heatmaps_or_flags(run, tmp_path: Path) -> None:
    out, folder, maps, _ = run
    html = write_report(out, out=tmp_path / "r.html", images=folder).read_text(encoding="utf-8")
    assert 'class="heat"' not in html and "Flagged cells (2)" in html
    old = tmp_path / "old.csv"
    old.write_text("path,status,error,prob_all,label,subject,adjustment\nUID_7_1_1_all.bmp,ok,,0.9,all,7,\n",
                   encoding="utf-8")
    html = write_report(old, out=tmp_path / "o.html").read_text(encoding="utf-8")
    assert "Not known: the rows carry no quality check" in html


def test_heatmaps_are_read_only_below_the_folder(run, tmp_path: Path) -> None:
    out, folder, maps, _ = run
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.zeros((10, 20, 3), np.uint8))
    (maps / INDEX).write_text("path,heatmap\nUID_7_1_1_all.bmp,../secret.png\nUID_7_2_1_all.bmp,/etc/passwd\n"
                              "UID_7_3_1_blur_all.bmp,link.png\n", encoding="utf-8")
    (maps / "link.png").symlink_to(secret)
    html = write_report(out, out=tmp_path / "r.html", images=folder, heatmaps=maps).read_text(encoding="utf-8")
    assert 'class="heat"' not in html
    (maps / INDEX).write_text("a,b\n", encoding="utf-8")
    html = write_report(out, out=tmp_path / "r.html", images=folder, heatmaps=maps).read_text(encoding="utf-8")
    assert f"{INDEX} has columns" in html and "no overlays shown" in html
    with pytest.raises(UsageError, match="not a folder"):
        write_report(out, out=tmp_path / "r.html", heatmaps=tmp_path / "none")


def test_sink_survives_a_full_disk_and_vanished_files(tmp_path: Path) -> None:
    class Clf:
        threshold, input_size = 0.5, 450

    def full(folder, predictions, images, threshold):
        raise OSError(28, "No space left on device")

    from edgeleuk.runtime.classifier import Prediction

    cam = np.zeros((300, 300), np.float32)
    p = Prediction(str(tmp_path / "a.bmp"), "ok", prob_all=0.9, label="all", logit=2.0, cam=cam)
    sink = HeatmapSink(tmp_path / "maps", Clf(), lambda path: path.name, write=full)
    assert sink(p).cam is None and sink(p).cam is None
    assert "overlays stopped after 0: No space left on device" in sink.close()
    gone = HeatmapSink(tmp_path / "maps2", Clf(), lambda path: path.name, write=fake_writer([]))
    assert gone(p).cam is None and "1 file(s) changed or vanished" in gone.close()


def test_same_names_in_two_folders_get_two_overlays(tmp_path: Path, model: Path, monkeypatch) -> None:
    for sub in ("a", "b"):
        write_bmp(tmp_path / "cells" / sub / "1.bmp", gray_cell(220))
    monkeypatch.setattr(heatmap_out, "default_writer", lambda pre=None: fake_writer([]))
    maps = tmp_path / "maps"
    options = PredictOptions(progress=False, recursive=True, heatmaps=maps)
    predict(tmp_path / "cells", model, tmp_path / "p.csv", options, classifier=WithMaps(Classifier.load(model, "cpu")))
    with open(maps / INDEX, newline="", encoding="utf-8") as fh:
        index = {r["path"]: r["heatmap"] for r in csv.DictReader(fh)}
    assert index == {"a/1.bmp": "1.png", "b/1.bmp": "1-1.png"}
    assert sorted(p.name for p in maps.iterdir()) == ["1-1.png", "1.png", INDEX]  # no staging left


def test_the_real_overlay_writer_through_predict_and_report(tmp_path: Path, model: Path) -> None:
    folder = tmp_path / "cells"
    for name, level in [("UID_7_1_1_all", 220), ("UID_H3_1_1_hem", 30), ("UID_H3_2_1_blur_hem", 35)]:
        write_bmp(folder / f"{name}.bmp", gray_cell(level))
    maps = tmp_path / "maps"
    summary = predict(folder, model, tmp_path / "p.csv", PredictOptions(progress=False, heatmaps=maps),
                      classifier=WithMaps(Classifier.load(model, "cpu")))
    with open(maps / INDEX, newline="", encoding="utf-8") as fh:
        index = {r["path"]: r["heatmap"] for r in csv.DictReader(fh)}
    assert set(index) == {"UID_7_1_1_all.bmp", "UID_H3_2_1_blur_hem.bmp"}  # the ALL call and the flagged cell
    assert all(cv2.imread(str(maps / png)) is not None for png in index.values())
    assert "heatmaps: 2 overlay(s)" in summary.describe()
    html = write_report(tmp_path / "p.csv", out=tmp_path / "r.html", images=folder, heatmaps=maps).read_text()
    assert html.count('class="heat"') >= 2
