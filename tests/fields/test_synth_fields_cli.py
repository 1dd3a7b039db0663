"""synth --fields (layout, truth, determinism) and the cells command (crops, CSV, error rows, overlays)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.errors import UsageError
from edgeleuk.synth.fields import make_fields

runner = CliRunner()
SIZE = (768, 576)


@pytest.fixture(scope="module")
def fields_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    make_fields(root, 3, seed=4, size=SIZE)
    return root


def test_layout_truth_and_crops(fields_root):
    assert (fields_root / "SYNTHETIC.txt").read_text().startswith("SYNTHETIC")
    assert sorted(p.name for p in (fields_root / "fields").iterdir()) == [f"field_000{i}.png" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        truth = json.loads((fields_root / "truth" / f"field_000{i}.json").read_text())
        mask = cv2.imread(str(fields_root / "truth" / f"field_000{i}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint16 and mask.shape == (SIZE[1], SIZE[0])
        assert truth["synthetic"] is True and truth["um_per_px"] == 0.08
        for obj in truth["objects"]:
            assert obj["kind"] in {"white_cell", "red_cell", "platelet", "debris"}
            if obj["kind"] == "white_cell":
                assert obj["label"] in {"all", "hem"}
                crop = cv2.imread(str(fields_root / obj["crop"]))
                assert crop.shape == (450, 450, 3)
        assert set(np.unique(mask)) - {0} <= {o["id"] for o in truth["objects"]}


def test_same_seed_same_field_and_no_overwrite(tmp_path, fields_root):
    make_fields(tmp_path / "again", 1, seed=4, size=SIZE)
    a = (fields_root / "fields" / "field_0001.png").read_bytes()
    assert (tmp_path / "again" / "fields" / "field_0001.png").read_bytes() == a
    with pytest.raises(UsageError):
        make_fields(fields_root, 1, size=SIZE)
    with pytest.raises(UsageError):
        make_fields(tmp_path / "x", 0)


def test_cells_command_writes_crops_rows_and_error_rows(tmp_path, fields_root):
    src = tmp_path / "in"
    src.mkdir()
    for p in (fields_root / "fields").iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "crops"
    res = runner.invoke(app, ["cells", str(src), "--out", str(out), "--model-um-per-px", "0.055", "--overlays"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "cells.csv").open()))
    errors = [r for r in rows if r["error"]]
    assert any(r["field"] == "broken.png" and "not a readable image" in r["error"] for r in errors)
    cells = [r for r in rows if r["cell"]]
    assert cells and all((out / r["crop"]).is_file() for r in cells)
    assert {r["scale_source"] for r in cells} == {"red-cell-median"}
    assert all(int(r["excluded_red_cell"]) > 10 for r in cells)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"field_000{i}.png" for i in (1, 2, 3)]
    strict = runner.invoke(app, ["cells", str(src), "--out", str(tmp_path / "c2"), "--model-um-per-px", "0.055",
                                 "--strict"])
    assert strict.exit_code == 1


def test_cells_command_needs_a_model_scale(tmp_path, fields_root):
    res = runner.invoke(app, ["cells", str(fields_root / "fields"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--model-um-per-px" in res.output


def test_synth_fields_option(tmp_path):
    res = runner.invoke(app, ["synth", str(tmp_path / "s"), "--fields", "1", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" in res.output and (tmp_path / "s" / "fields" / "field_0001.png").is_file()
