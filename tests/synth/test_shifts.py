"""synth --shifts: labelled SYNTHETIC shifted cells, their layout and determinism."""

from __future__ import annotations

import csv
import hashlib

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.errors import UsageError
from edgeleuk.synth.dataset import make_synthetic
from edgeleuk.synth.shifts import SHIFT_KINDS, draw_shifted, normal_cells, shifted_cells


def test_shifts_are_written_labelled_beside_the_data_set(tmp_path):
    summary = make_synthetic(tmp_path / "d", subjects=5, cells_per_subject=1, seed=2, shifts=2)
    root = tmp_path / "d" / "shifts"
    assert summary.shifts == {kind: 2 for kind in SHIFT_KINDS}
    assert "14 shifted cells, 2 of each kind" in summary.describe()
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["kind"]) for r in rows] == [
        (f"{k}/{k}_{i}.bmp", k) for k in SHIFT_KINDS for i in (1, 2)]
    for r in rows:
        img = cv2.imread(str(root / r["file"]), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (450, 450, 3)
    first = cv2.imread(str(root / "blur/blur_1.bmp"))[:, :, ::-1]
    np.testing.assert_array_equal(first, next(shifted_cells("blur", 1, seed=2)))
    plain = make_synthetic(tmp_path / "plain", subjects=5, cells_per_subject=1, seed=2)
    assert plain.shifts == {} and not (tmp_path / "plain" / "shifts").exists()


def test_same_seed_same_pixels_and_kinds_differ():
    for kind in SHIFT_KINDS:
        a, b = (next(shifted_cells(kind, 1, seed=9)) for _ in range(2))
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), kind
        assert a.dtype == np.uint8 and a.shape == (450, 450, 3)
    firsts = {kind: next(shifted_cells(kind, 1, seed=9)).tobytes() for kind in SHIFT_KINDS}
    assert len(set(firsts.values())) == len(SHIFT_KINDS)
    normal = next(normal_cells(1, seed=9))
    assert normal.tobytes() not in firsts.values()


def test_each_kind_departs_as_documented():
    rng = np.random.default_rng
    assert draw_shifted("blank", rng(0)).max() < 256 and (draw_shifted("blank", rng(0)) > 10).mean() < 0.001
    red = draw_shifted("red_cell", rng(1))
    fg = red.max(axis=2) > 10
    assert (red[fg][:, 0] > red[fg][:, 2]).all()  # pink-red, no purple nucleus
    over = draw_shifted("overexposed", rng(2))
    assert (over == 255).any(axis=2).sum() > 1000
    with pytest.raises(KeyError):
        draw_shifted("sepia", rng(3))


def test_bad_shift_counts_and_a_clash_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--shifts"):
        make_synthetic(tmp_path / "x", subjects=5, cells_per_subject=1, shifts=-1)
    (tmp_path / "y" / "shifts").mkdir(parents=True)
    with pytest.raises(UsageError, match="already holds"):
        make_synthetic(tmp_path / "y", subjects=5, cells_per_subject=1, shifts=1)


def test_cli_synth_shifts(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--subjects", "5", "--cells-per-subject", "1",
                                      "--shifts", "1"])
    assert result.exit_code == 0, result.output
    assert "7 shifted cells" in result.output and (tmp_path / "s" / "shifts" / "labels.csv").is_file()
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--shifts", "-2"])
    assert bad.exit_code == 2
