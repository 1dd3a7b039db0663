"""``predict --fields``: rows per white cell, error rows per hostile field, crops, overlays, the fields record.

SYNTHETIC fields and the brightness test model. The segmentation is a fake (tests/field_support.py)
except in the last test, which runs the real one on fields from ``synth --fields``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from field_support import ALL_GREY, BUSY, HEM_GREY, ONE, fake_find_cells, write_field
from typer.testing import CliRunner
from workflow_support import build_brightness_onnx

from edgeleuk.cli import app
from edgeleuk.core.errors import EngineFault, UsageError
from edgeleuk.workflow import fieldrows
from edgeleuk.workflow.fieldpredict import predict_fields
from edgeleuk.workflow.fieldrows import FIELD_COLUMNS, FieldOptions, fields_path
from edgeleuk.workflow.outputs import columns
from edgeleuk.workflow.predict import PredictOptions, partial_path

MODEL_UM = 0.25
OPTS = PredictOptions(backend="cpu", progress=False)
runner = CliRunner()
# Every field is segmented by the fake that takes each drawn square for a cell (tests/workflow/conftest.py).
pytestmark = pytest.mark.usefixtures("squares_are_cells")


@pytest.fixture
def smear(tmp_path: Path) -> Path:
    """Four fields: two cells (+ a platelet and an edge-cut cell), no cell, a truncated file, one cell."""
    folder = tmp_path / "smear"
    write_field(folder / "a_busy.png", BUSY)
    write_field(folder / "b_empty.png", [])
    data = write_field(folder / "c_cut.png", ONE).read_bytes()
    (folder / "c_cut.png").write_bytes(data[: len(data) // 3])  # truncated mid-file
    write_field(folder / "d_one.bmp", ONE)
    return folder


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_rows_per_cell_and_one_error_row_per_bad_field(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    summary = predict_fields(smear, bright_model, out, OPTS, FieldOptions(model_um_per_px=MODEL_UM, um_per_px=0.5))
    header, rows = _csv(out)
    assert tuple(header) == FIELD_COLUMNS + columns(False)
    assert [(r["field"], r["cell"], r["status"]) for r in rows] == [
        ("a_busy.png", "1", "ok"), ("a_busy.png", "2", "ok"), ("b_empty.png", "", "error"),
        ("c_cut.png", "", "error"), ("d_one.bmp", "1", "ok"),
    ]
    busy = rows[:2]
    assert [r["label"] for r in busy] == ["hem", "all"]  # HEM_GREY then ALL_GREY, in reading order
    assert busy[0]["bbox"] == "40 40 70 70" and busy[0]["centroid"] == "54.5 54.5"
    assert busy[1]["area_um2"] == f"{40 * 40 * 0.25:.1f}" and {r["scale_source"] for r in busy} == {"flag"}
    assert all(r["path"] == r["field"] for r in rows)
    assert "no white cell" in rows[2]["error"] and "1 platelet" not in rows[2]["error"]
    assert rows[3]["error"].startswith("not read as a field")
    assert summary.ok == 3 and summary.failed == 2 and summary.exit_code() == 0
    text = summary.describe()
    assert "made 5 row(s) from 4 field(s)" in text and "1 edge cut, 1 platelet" in text


def test_fields_record_counts_what_was_not_classified(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    predict_fields(smear, bright_model, out, OPTS, FieldOptions(model_um_per_px=MODEL_UM))
    doc = json.loads(fields_path(out).read_text())
    assert doc["rows"] == 5 and doc["n_fields"] == 4 and doc["cells"] == 3
    busy = doc["fields"]["a_busy.png"]
    assert busy["status"] == "ok" and busy["cells"] == 2
    assert busy["excluded"] == {"red_cell": 0, "platelet": 1, "debris": 0, "edge_cut": 1}
    assert busy["scale_source"] == "red-cell-median"  # no flag, no TIFF tags: the segmentation's estimate
    assert doc["fields"]["b_empty.png"]["status"] == "error" and doc["fields"]["c_cut.png"]["status"] == "error"
    assert doc["excluded"]["platelet"] == 1 and doc["excluded"]["edge_cut"] == 1


def test_crops_and_overlays(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    out, crops, overlays = tmp_path / "p.jsonl", tmp_path / "crops", tmp_path / "over"
    options = PredictOptions(backend="cpu", progress=False, fmt="jsonl")
    predict_fields(smear, bright_model, out, options, FieldOptions(model_um_per_px=MODEL_UM, save_crops=crops,
                                                            overlays=overlays))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["bbox"] == [40, 40, 70, 70] and rows[0]["cell"] == 1
    saved = [Path(r["crop"]) for r in rows if r["crop"]]
    assert saved == [crops / "a_busy.png.cells" / "cell_001.png", crops / "a_busy.png.cells" / "cell_002.png",
                     crops / "d_one.bmp.cells" / "cell_001.png"]
    crop = cv2.imread(str(saved[1]))
    assert crop.shape == (450, 450, 3) and int(crop.mean()) == ALL_GREY  # the crop the model saw
    assert all(r["crop"] is None for r in rows if r["status"] == "error")
    record = json.loads(fields_path(out).read_text())["fields"]
    for name in ("a_busy.png", "b_empty.png", "d_one.bmp"):  # a field without white cells still shows its objects
        png = cv2.imread(str(overlays / f"{name}.overlay.png"))
        assert png is not None and png.shape == (300, 400, 3)
        assert record[name]["overlay"] == str(overlays / f"{name}.overlay.png")
    assert not (overlays / "c_cut.png.overlay.png").exists()  # unreadable: nothing to draw on


def test_a_field_that_breaks_the_segmentation_is_one_error_row(
    bright_model: Path, smear: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fragile(field: np.ndarray, **kw):
        if (field[:, :, 0] == HEM_GREY).any():
            raise MemoryError("a field full of overlapping cells")
        return fake_find_cells(field, **kw)

    monkeypatch.setattr(fieldrows.fieldlib, "find_cells", fragile)
    out = tmp_path / "p.csv"
    summary = predict_fields(smear, bright_model, out, OPTS, FieldOptions(model_um_per_px=MODEL_UM))
    _, rows = _csv(out)
    bad = [r for r in rows if r["field"] == "a_busy.png"]
    assert len(bad) == 1 and bad[0]["status"] == "error" and "MemoryError" in bad[0]["error"]
    assert [r["field"] for r in rows if r["status"] == "ok"] == ["d_one.bmp"]
    assert summary.exit_code() == 0


def test_model_without_a_scale_needs_the_flag(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--model-um-per-px"):
        predict_fields(smear, bright_model, tmp_path / "p.csv", OPTS, FieldOptions())
    assert not (tmp_path / "p.csv").exists()
    for bad in (0.0, float("nan"), 50.0):
        with pytest.raises(UsageError, match="micrometres per pixel"):
            FieldOptions(um_per_px=bad)
    with pytest.raises(UsageError, match="csv or jsonl"):
        predict_fields(smear, bright_model, tmp_path / "s.zip", PredictOptions(fmt="cnmc"),
                       FieldOptions(model_um_per_px=1))


def test_tiff_scale_is_used_unless_the_flag_says_otherwise(
    bright_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40000 pixels per centimetre: 0.25 um per pixel, in the file's resolution tags
    tags = [cv2.IMWRITE_TIFF_RESUNIT, 3, cv2.IMWRITE_TIFF_XDPI, 40000, cv2.IMWRITE_TIFF_YDPI, 40000]
    write_field(tmp_path / "f" / "one.tif", ONE, params=tags)
    seen: list[float | None] = []

    def spy(field, *, um_per_px, **kw):
        seen.append(um_per_px)
        return fake_find_cells(field, um_per_px=um_per_px, **kw)

    monkeypatch.setattr(fieldrows.fieldlib, "find_cells", spy)
    for flag, source in ((None, "tiff"), (0.4, "flag")):
        out = tmp_path / f"{source}.csv"
        predict_fields(tmp_path / "f", bright_model, out, OPTS, FieldOptions(um_per_px=flag, model_um_per_px=MODEL_UM))
        rows = _csv(out)[1]
        assert [r["scale_source"] for r in rows] == [source]
        assert rows[0]["area_um2"] == f"{30 * 30 * (flag or 0.25) ** 2:.1f}"
    assert seen == [pytest.approx(0.25), 0.4]


class _FaultOnSecond:
    """A classifier whose engine fails on its second call."""

    def __init__(self, clf) -> None:
        self._clf, self.calls = clf, 0

    def __getattr__(self, name: str):
        return getattr(self._clf, name)

    def predict_arrays(self, images):
        self.calls += 1
        if self.calls == 2:
            raise EngineFault("device lost")
        return self._clf.predict_arrays(images)


def test_an_engine_fault_stops_and_keeps_the_finished_fields(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    from edgeleuk.runtime.classifier import Classifier

    clf = _FaultOnSecond(Classifier.load(bright_model, backend="cpu"))
    out = tmp_path / "p.csv"
    with pytest.raises(EngineFault, match=r"stopped after 3 of 4 field\(s\)"):
        predict_fields(smear, bright_model, out, OPTS, FieldOptions(model_um_per_px=MODEL_UM), classifier=clf)
    assert not out.exists()
    _, rows = _csv(partial_path(out))
    assert [r["field"] for r in rows] == ["a_busy.png", "a_busy.png", "b_empty.png", "c_cut.png"]
    assert json.loads(fields_path(partial_path(out)).read_text())["rows"] == 4


def test_cli_predict_fields(bright_model: Path, smear: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    args = ["predict", str(smear), "-m", str(bright_model), "--backend", "cpu", "--out", str(out), "--fields",
            "--model-um-per-px", "0.25", "--overlays", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "from 4 field(s)" in result.output and "not classified: 1 edge cut, 1 platelet" in result.output
    assert (tmp_path / "o" / "a_busy.png.overlay.png").is_file()
    result = runner.invoke(app, ["predict", str(smear), "-m", str(bright_model), "--overlays", str(tmp_path / "o")])
    assert result.exit_code == 2 and "only apply with --fields" in result.output
    result = runner.invoke(app, [*args[:-2], "--strict"])
    assert result.exit_code == 1  # two fields gave error rows


def test_real_segmentation_on_synthetic_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``synth --fields`` -> ``predict --fields`` with the real find_cells and a model that states its scale."""
    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.core.optics import SYNTH_UM_PER_PX
    from edgeleuk.synth.fields import make_fields

    monkeypatch.undo()  # the real segmentation
    make_fields(tmp_path / "synth", 2, seed=3, size=(1024, 768))
    bright_model = build_brightness_onnx(tmp_path / "m.onnx", ModelMeta(arch="seresnext_tiny", recipe="fields-test",
                                                                  um_per_px=SYNTH_UM_PER_PX))
    out, overlays = tmp_path / "p.csv", tmp_path / "over"
    summary = predict_fields(tmp_path / "synth" / "fields", bright_model, out, OPTS, FieldOptions(overlays=overlays))
    assert summary.synthetic and "SYNTHETIC" in summary.describe()
    _, rows = _csv(out)
    record = json.loads(fields_path(out).read_text())["fields"]
    for name in ("field_0001.png", "field_0002.png"):
        truth = json.loads((tmp_path / "synth" / "truth" / name.replace(".png", ".json")).read_text())
        whole = [o for o in truth["objects"] if o["kind"] == "white_cell" and not o["edge_cut"]]
        mine = [r for r in rows if r["field"] == name]
        assert len(mine) == record[name]["cells"] and record[name]["scale_source"] == "red-cell-median"
        assert abs(len(mine) - len(whole)) <= 1 and all(r["status"] == "ok" for r in mine)
        assert record[name]["excluded"]["red_cell"] > 10
        assert cv2.imread(str(overlays / f"{name}.overlay.png")).shape == (768, 1024, 3)


def _huge_png(path: Path, side: int = 60_000) -> Path:
    """A PNG whose header declares ``side`` x ``side`` pixels (3.6 GP), with almost no data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def test_hostile_fields_cost_one_error_row_each(bright_model: Path, tmp_path: Path) -> None:
    from runtime_support import write_bad_files

    folder = tmp_path / "hostile"
    bad = write_bad_files(folder)  # empty, text, truncated, a 20x20 float TIFF
    _huge_png(folder / "huge.png")
    write_field(folder / "ok.png", ONE)
    out = tmp_path / "p.csv"
    summary = predict_fields(folder, bright_model, out, OPTS, FieldOptions(model_um_per_px=MODEL_UM))
    _, rows = _csv(out)
    by_field: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_field.setdefault(r["field"], []).append(r)
    assert set(by_field) == {*bad, "huge.png", "ok.png"}
    for name in [*bad, "huge.png"]:
        assert [(r["status"], r["cell"]) for r in by_field[name]] == [("error", "")], name
        assert by_field[name][0]["error"].startswith("not read as a field")
    assert "too large" in by_field["huge.png"][0]["error"]
    assert [(r["status"], r["label"]) for r in by_field["ok.png"]] == [("ok", "all")]
    assert summary.failed == len(bad) + 1 and summary.exit_code() == 0


def test_unwritable_crop_or_overlay_folder_is_refused_before_any_work(
    bright_model: Path, smear: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for options in (FieldOptions(model_um_per_px=MODEL_UM, save_crops=blocker),
                    FieldOptions(model_um_per_px=MODEL_UM, overlays=blocker / "sub")):
        with pytest.raises(UsageError, match="cannot write --(save-crops|overlays)"):
            predict_fields(smear, bright_model, tmp_path / "p.csv", OPTS, options)
    assert not (tmp_path / "p.csv").exists()


def test_cells_cut_from_fields_are_judged_under_qc_like_any_cell(bright_model: Path, smear: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A flagged cell of a field: its call kept under --qc flag, withheld (status flagged) under strict."""
    import dataclasses

    from edgeleuk.runtime.classifier import Classifier

    real = Classifier.predict_arrays

    def flag_all_calls(self: Classifier, images: np.ndarray) -> list:
        # The fake fields' grey squares fail real checks; here only the ALL call is flagged.
        return [dataclasses.replace(p, qc=("blur",) if p.label == "all" else (), ood_flag=False)
                for p in real(self, images)]

    monkeypatch.setattr(Classifier, "predict_arrays", flag_all_calls)
    fields = FieldOptions(model_um_per_px=MODEL_UM, um_per_px=0.5)
    for mode in ("flag", "strict"):
        out = tmp_path / f"{mode}.csv"
        options = PredictOptions(backend="cpu", progress=False, qc=mode)
        summary = predict_fields(smear, bright_model, out, options, fields)
        rows = [r for r in _csv(out)[1] if r["field"] == "a_busy.png"]
        assert [r["qc"] for r in rows] == ["ok", "blur"]
        if mode == "flag":
            assert [(r["status"], r["label"]) for r in rows] == [("ok", "hem"), ("ok", "all")]
        else:
            assert [(r["status"], r["label"]) for r in rows] == [("ok", "hem"), ("flagged", "")]
            withheld = sum(r["status"] == "flagged" for r in _csv(out)[1])
            assert withheld >= 1 and summary.flagged == withheld and summary.failed == 2
            assert summary.exit_code() == 0  # a withheld call is not a failure
