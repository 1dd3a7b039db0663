"""make_synthetic: layout, counts, subject-disjoint splits, determinism and a learnable class signal."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeleuk.core.errors import UsageError
from edgeleuk.io.data import discover
from edgeleuk.synth.dataset import assign_subjects, make_synthetic

UID = re.compile(r"UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.bmp")


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_synthetic(tmp_path / "a", subjects=5, cells_per_subject=2, seed=1)
    make_synthetic(tmp_path / "b", subjects=5, cells_per_subject=2, seed=1)
    make_synthetic(tmp_path / "c", subjects=5, cells_per_subject=2, seed=2)
    da, db, dc = (_digest(tmp_path / x) for x in "abc")
    assert da == db and a.total == 10
    shared = set(da) & set(dc)
    assert any(da[k] != dc[k] for k in shared if k.endswith(".bmp"))


def test_public_layout_names_and_images(synth_root):
    bmps = sorted((synth_root / "training_data").rglob("*.bmp"))
    assert bmps
    for p in bmps:
        m = UID.fullmatch(p.name)
        assert m, p.name
        assert p.parent.name == m.group(4) and re.fullmatch(r"fold_[012]", p.parent.parent.name)
        assert m.group(1).startswith("H") == (m.group(4) == "hem")
    img = cv2.imread(str(bmps[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (450, 450, 3) and img.dtype == np.uint8
    assert not list(synth_root.rglob(".*"))  # no temp files left behind
    assert "SYNTHETIC" in (synth_root / "SYNTHETIC.txt").read_text()


def test_counts_ratio_and_disjoint_subjects(synth_root):
    idx = discover(synth_root)
    c = idx.counts()
    train_prelim = [r for s in ("train", "prelim") for r in idx.split(s)]
    n_all = sum(r.label == 1 for r in train_prelim)
    n_hem = sum(r.label == 0 for r in train_prelim)
    assert 1.5 <= n_all / n_hem <= 3.0  # about 2:1 as in C-NMC
    assert c["train"]["all"] and c["train"]["hem"] and c["prelim"]["all"] and c["prelim"]["hem"]
    train_subjects = {r.subject for r in idx.split("train")}
    prelim_subjects = {r.subject for r in idx.split("prelim")}
    assert train_subjects.isdisjoint(prelim_subjects)
    by_subject: dict[str, set] = {}
    for r in train_prelim:
        by_subject.setdefault(r.subject, set()).add(r.label)
    assert all(len(labels) == 1 for labels in by_subject.values())  # one class per subject


@pytest.mark.parametrize("n", [5, 10, 25, 73])
def test_assign_subjects_disjoint_and_balanced(n):
    subjects = assign_subjects(n, seed=3)
    ids = [s.id for s in subjects]
    assert len(ids) == len(set(ids)) == n
    for split in ("train", "prelim"):
        assert {s.label for s in subjects if s.split == split} == {0, 1}
    assert all((s.fold is None) == (s.split != "train") for s in subjects)
    assert all(s.id.startswith("H") == (s.label == 0) for s in subjects)
    n_all = sum(s.label for s in subjects)
    assert n_all >= n - n_all


def test_prelim_csv_matches_files(synth_root):
    with open(synth_root / "prelim_labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["Patient_ID", "new_names", "labels"]
    assert sorted(int(r["new_names"][:-4]) for r in rows) == list(range(1, len(rows) + 1))
    assert {p.name for p in (synth_root / "prelim").iterdir()} == {r["new_names"] for r in rows}
    for r in rows:
        assert UID.fullmatch(r["Patient_ID"]).group(4) == ("all" if r["labels"] == "1" else "hem")


def _cell_stats(path: Path) -> tuple[float, float]:
    """(share of cell pixels outside the 300x300 centre crop, nucleus share of the cell)."""
    img = cv2.imread(str(path)).astype(int)
    cell = img.sum(axis=2) > 60
    centre = np.zeros_like(cell)
    centre[75:375, 75:375] = True
    nucleus = cell & (img[:, :, 1] < 110)  # purple nucleus: low green; cytoplasm is pale
    return (cell & ~centre).sum() / cell.sum(), nucleus.sum() / cell.sum()


def test_cells_fit_the_crop_and_classes_differ(synth_root):
    idx = discover(synth_root)
    stats = {1: [], 0: []}
    for rec in idx.split("train") + idx.split("prelim"):
        outside, nucleus = _cell_stats(rec.path)
        assert outside < 0.02, rec.path.name
        stats[rec.label].append(nucleus)
    # ALL blasts have the larger nucleus-to-cell share; the laws overlap, the means do not.
    assert np.mean(stats[1]) > np.mean(stats[0]) + 0.15


def test_refuses_to_overwrite_and_bad_counts(tmp_path, synth_root):
    with pytest.raises(UsageError, match="already holds a data set"):
        make_synthetic(synth_root, subjects=5, cells_per_subject=1, seed=0)
    with pytest.raises(UsageError, match="at least 5"):
        make_synthetic(tmp_path / "x", subjects=4, cells_per_subject=1, seed=0)
    with pytest.raises(UsageError, match="at least 1"):
        make_synthetic(tmp_path / "x", subjects=5, cells_per_subject=0, seed=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        make_synthetic(tmp_path / "file", subjects=5, cells_per_subject=1, seed=0)


def test_cli_synth_prints_synthetic_summary(tmp_path):
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--subjects", "5",
                                      "--cells-per-subject", "1", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output and "prelim" in result.output
    again = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--subjects", "5"])
    assert again.exit_code == 2 and "already holds" in again.output
