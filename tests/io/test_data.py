"""discover(): the public release, the paper's layout, mirrors' nesting, plain folders and bad data."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.io.data import (
    Record,
    discover,
    fingerprint,
    is_healthy,
    label_from_name,
    list_images,
    natural_key,
    read_labels_csv,
    records_for,
    spread,
    subject_from_name,
)


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a folder cheaply (hard links): tests rearrange the synthetic set into other layouts."""
    shutil.copytree(src, dst, copy_function=os.link)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_public_layout_from_synth(synth_root):
    idx = discover(synth_root)
    assert idx.layout == "public" and idx.synthetic
    counts = idx.counts()
    assert set(counts) == {"train", "prelim", "final"}
    total = sum(c["images"] for c in counts.values())
    assert total == 60  # conftest: 10 subjects x 6 cells
    for rec in idx.split("train"):
        assert rec.split == "train" and rec.fold in (0, 1, 2)
        assert rec.label == (1 if rec.path.name.endswith("_all.bmp") else 0)
        assert rec.path.parent.name == ("all" if rec.label else "hem")
        assert rec.subject == rec.path.name.split("_")[1]
        assert is_healthy(rec.subject) == (rec.label == 0)


def test_public_prelim_labels_and_order(synth_root):
    idx = discover(synth_root)
    prelim = idx.split("prelim")
    rows = {r["new_names"]: r for r in _csv_rows(synth_root / "prelim_labels.csv")}
    assert len(prelim) == len(rows)
    for rec in prelim:
        row = rows[rec.path.name]
        assert rec.label == int(row["labels"]) and rec.subject == subject_from_name(row["Patient_ID"])
        assert rec.fold is None
    numbers = [int(r.path.stem) for r in prelim]
    assert numbers == sorted(numbers)  # numeric, not lexicographic, order
    final = idx.split("final")
    assert all(r.label is None and r.subject is None and r.split == "final" for r in final)
    assert [int(r.path.stem) for r in final] == list(range(1, len(final) + 1))


def _paper_layout(synth_root: Path, dst: Path) -> Path:
    """fold_k/{all,hem}, phase2 + phase2.csv, phase3: the layout of the paper's code."""
    for fold in (synth_root / "training_data").iterdir():
        _link_tree(fold, dst / fold.name)
    _link_tree(synth_root / "prelim", dst / "phase2")
    shutil.copyfile(synth_root / "prelim_labels.csv", dst / "phase2.csv")
    _link_tree(synth_root / "final", dst / "phase3")
    return dst


def test_paper_layout(synth_root, tmp_path):
    public = discover(synth_root)
    idx = discover(_paper_layout(synth_root, tmp_path / "paper"))
    assert idx.layout == "paper" and not idx.synthetic
    assert idx.counts() == public.counts()
    assert [r.path.name for r in idx.split("prelim")] == [r.path.name for r in public.split("prelim")]
    assert [r.label for r in idx.split("prelim")] == [r.label for r in public.split("prelim")]
    assert {r.path.parent.parent.name for r in idx.split("train")} <= {"fold_0", "fold_1", "fold_2"}


def test_kaggle_mirror_nesting(synth_root, tmp_path):
    """Real names, nested as the Kaggle mirror does, and the data root one level up."""
    top = tmp_path / "download" / "C-NMC_Leukemia"
    _link_tree(synth_root / "training_data", top / "training_data")
    _link_tree(synth_root / "prelim", top / "validation_data" / "C-NMC_test_prelim_phase_data")
    shutil.copyfile(synth_root / "prelim_labels.csv",
                    top / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv")
    _link_tree(synth_root / "final", top / "testing_data" / "C-NMC_test_final_phase_data")
    idx = discover(tmp_path / "download")
    assert idx.layout == "public"
    assert idx.counts() == discover(synth_root).counts()


def test_labels_csv_inside_prelim_folder(synth_root, tmp_path):
    root = tmp_path / "r"
    _link_tree(synth_root / "prelim", root / "C-NMC_test_prelim_phase_data")
    shutil.copyfile(synth_root / "prelim_labels.csv", root / "C-NMC_test_prelim_phase_data" / "labels.csv")
    idx = discover(root)
    assert idx.has("prelim") and not idx.has("train") and not idx.has("final")


def test_plain_folder_layout(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("10.bmp", "2.bmp", "b.PNG", "sub/a.jpg", "notes.txt", ".hidden.bmp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["2.bmp", "10.bmp", "b.PNG"]
    idx = discover(tmp_path)
    assert idx.layout == "folder"
    images = idx.split("images")
    rel = [r.path.relative_to(tmp_path).as_posix() for r in images]
    assert rel == ["2.bmp", "10.bmp", "b.PNG", "sub/a.jpg"]
    assert all(r.label is None and r.split == "images" for r in images)
    with pytest.raises(DataError, match="no 'train' images"):
        idx.split("train")
    with pytest.raises(UsageError, match="unknown split"):
        idx.split("validation")


def test_symlinked_folders_are_followed_without_looping(synth_root, tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    os.symlink(synth_root / "training_data", root / "training_data")
    os.symlink(root, root / "loop")  # a link back up the tree
    idx = discover(root)
    assert idx.counts()["train"]["images"] == 36
    assert all("loop" not in r.path.parts for r in idx.split("train"))  # shortest path wins
    assert len(list_images(root, recursive=True)) == 36


def test_images_split_keeps_known_labels(synth_root):
    images = discover(synth_root).split("images")
    assert len(images) == 60
    assert sum(r.label is not None for r in images) == len(discover(synth_root).split("prelim")) + 36


def test_list_images_natural_order_and_broken_files(tmp_path):
    for n in (1, 2, 10, 11, 3):
        (tmp_path / f"{n}.bmp").write_bytes(b"")
    (tmp_path / "dir.bmp").mkdir()
    os.symlink(tmp_path / "gone.bmp", tmp_path / "20.bmp")  # broken link: kept, decode reports it
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["1.bmp", "2.bmp", "3.bmp", "10.bmp", "11.bmp", "20.bmp"]
    assert natural_key("a/2.bmp") < natural_key("a/10.bmp")


@pytest.mark.parametrize(
    "name, subject",
    [
        ("UID_11_10_1_all.bmp", "11"),
        ("UID_H10_43_1_hem.bmp", "H10"),
        ("/x/y/UID_h3_1_2_hem.bmp", "H3"),
        ("17.bmp", None),
        ("cell.png", None),
    ],
)
def test_subject_from_name(name, subject):
    assert subject_from_name(name) == subject


@pytest.mark.parametrize(
    "name, label",
    [
        ("UID_11_10_1_all.bmp", 1),
        ("fold_0/hem/UID_H10_43_1_HEM.bmp", 0),
        ("17.bmp", None),  # a test-set name states no class
        ("patient_all.png", None),  # no UID_<subject>_: not a C-NMC name
        ("UID_11_10_1.bmp", None),
    ],
)
def test_label_from_name(name, label):
    assert label_from_name(name) == label


def test_synthetic_flag_found_from_a_sub_folder(synth_root):
    assert discover(synth_root / "training_data").synthetic


def test_missing_root_and_file_root(tmp_path):
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nope")
    (tmp_path / "f.bmp").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file"):
        discover(tmp_path / "f.bmp")


def test_empty_folder(tmp_path):
    (tmp_path / "empty_sub").mkdir()
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="no images found"):
        discover(tmp_path)


def _prelim_with_csv(synth_root: Path, root: Path, text: str) -> Path:
    _link_tree(synth_root / "prelim", root / "phase2")
    (root / "phase2.csv").write_text(text)
    return root


def test_labels_csv_wrong_columns(synth_root, tmp_path):
    root = _prelim_with_csv(synth_root, tmp_path / "r", "file,label\n1.bmp,1\n")
    with pytest.raises(DataError, match="Patient_ID,new_names,labels"):
        discover(root)


def test_labels_csv_bad_label_and_mismatch(synth_root, tmp_path):
    header = "Patient_ID,new_names,labels\n"
    with pytest.raises(DataError, match=r"not 0 \(HEM\) or 1"):
        discover(_prelim_with_csv(synth_root, tmp_path / "a", header + "UID_1_1_1_all.bmp,1.bmp,2\n"))
    with pytest.raises(DataError, match="disagree"):
        discover(_prelim_with_csv(synth_root, tmp_path / "b", header + "UID_1_1_1_all.bmp,1.bmp,1\n"))


def test_unrelated_csv_is_ignored(synth_root, tmp_path):
    root = tmp_path / "r"
    _link_tree(synth_root / "final", root / "final")
    (root / "final" / "predictions.csv").write_text("path,prob\n1.bmp,0.3\n")
    idx = discover(root)
    assert idx.has("final") and not idx.has("prelim")


def test_read_labels_csv_tolerates_bom_and_spaces(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("\ufeffPatient_ID, new_names ,labels\nUID_H1_1_1_hem.bmp, 2.bmp ,0\n", encoding="utf-8")
    assert read_labels_csv(p) == [("UID_H1_1_1_hem.bmp", "2.bmp", 0)]


def test_fingerprint_tracks_files_and_labels(tmp_path):
    a = [Record(tmp_path / "1.bmp", 1, "1", "train", 0), Record(tmp_path / "2.bmp", 0, "H1", "train", 0)]
    assert fingerprint(a, tmp_path) == fingerprint(list(reversed(a)), tmp_path)
    b = [a[0], Record(tmp_path / "2.bmp", 1, "H1", "train", 0)]
    assert fingerprint(a, tmp_path) != fingerprint(b, tmp_path)


def test_describe_mentions_splits(synth_root):
    text = discover(synth_root).describe()
    assert "public layout SYNTHETIC" in text and "prelim" in text


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys; import edgeleuk.io.data, edgeleuk.evaluation.metrics, edgeleuk.io.imageio; "
        "import edgeleuk.io.imageio as io, numpy as np; io.decode_bytes(b'x'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_spread_is_deterministic_and_covers_ends() -> None:
    recs = [Record(Path(f"{i}.bmp"), i % 2, None, "train", None) for i in range(10)]
    picked = spread(recs, 4)
    assert [r.path.name for r in picked] == ["0.bmp", "3.bmp", "6.bmp", "9.bmp"]
    assert spread(recs, 20) == recs


def test_records_for_listed_files_agree_with_discover(synth_root, tmp_path):
    """Labels read around already-listed files are the ones discover finds for the whole tree."""
    idx = discover(synth_root)
    for split in ("prelim", "train"):
        expected = idx.split(split)
        got = records_for([r.path for r in expected])
        assert [(r.label, r.subject) for r in got] == [(r.label, r.subject) for r in expected]
    # The paper's layout: class folders inside fold folders, names without the class suffix.
    plain = tmp_path / "fold_0" / "hem" / "cell.bmp"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"")
    (rec,) = records_for([plain])
    assert (rec.label, rec.split, rec.fold) == (0, "train", 0)


def test_records_for_leaves_a_folder_unlabelled_when_its_csv_disagrees(tmp_path, caplog):
    folder = tmp_path / "prelim"
    folder.mkdir()
    paths = [folder / f"{i}.bmp" for i in (1, 2)]
    for p in paths:
        p.write_bytes(b"")
    (tmp_path / "prelim_labels.csv").write_text("Patient_ID,new_names,labels\nUID_1,1.bmp,1\nUID_2,3.bmp,0\n")
    with caplog.at_level("WARNING"):
        got = records_for(paths)
    assert [r.label for r in got] == [None, None]
    assert "true labels not used" in caplog.text
    (tmp_path / "prelim_labels.csv").write_text(
        "Patient_ID,new_names,labels\nUID_1_1_1_all.bmp,1.bmp,1\nUID_H2_1_1_hem.bmp,2.bmp,0\n"
    )
    assert [(r.label, r.subject) for r in records_for(paths)] == [(1, "1"), (0, "H2")]
