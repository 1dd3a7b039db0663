"""Record selection, class weighting, caps and the data errors training raises."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgeleuk.core.errors import DataError
from edgeleuk.training.augment import TrainTransform
from edgeleuk.training.dataset import CellDataset, class_counts, pos_weight, select_records, stratified_cap
from edgeleuk.training.recipe import load_recipe


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_pos_weight_is_hem_over_all_of_the_training_folds(synth_root):
    splits = select_records(synth_root, load_recipe("paper"))
    files = list((synth_root / "training_data").glob("fold_*/*/*.bmp"))
    n_hem = sum(f.name.endswith("_hem.bmp") for f in files)
    n_all = sum(f.name.endswith("_all.bmp") for f in files)
    assert len(splits.train) == len(files)
    assert pos_weight(splits.train) == pytest.approx(n_hem / n_all)
    assert splits.synthetic and len(splits.fingerprint) == 64


def test_caps_keep_both_classes_and_are_fixed(synth_root):
    recipe = load_recipe("smoke")
    a = select_records(synth_root, recipe)
    b = select_records(synth_root, recipe.replace(seed=5))
    assert len(a.train) <= recipe.max_train_images + 1 and len(a.val) <= recipe.max_val_images + 1
    assert min(class_counts(a.train).values()) >= 1 and min(class_counts(a.val).values()) >= 1
    assert [r.path for r in a.train] == [r.path for r in b.train]
    assert stratified_cap(a.train, None) == a.train


def test_missing_training_split(tmp_path, synth_root):
    root = _copy(synth_root, tmp_path / "d")
    shutil.rmtree(root / "training_data")
    with pytest.raises(DataError, match="train"):
        select_records(root, load_recipe("smoke"))


def test_missing_validation_split(tmp_path, synth_root):
    root = _copy(synth_root, tmp_path / "d")
    shutil.rmtree(root / "prelim")
    (root / "prelim_labels.csv").unlink()
    with pytest.raises(DataError, match="prelim"):
        select_records(root, load_recipe("smoke"))


def test_class_without_images(tmp_path, synth_root):
    root = _copy(synth_root, tmp_path / "d")
    for folder in root.glob("training_data/fold_*/hem"):
        for f in folder.iterdir():
            f.unlink()
    with pytest.raises(DataError, match="no 'hem' images"):
        select_records(root, load_recipe("smoke"))


def test_folds_outside_the_data(synth_root):
    with pytest.raises(DataError, match="folds"):
        select_records(synth_root, load_recipe("smoke").replace(train_folds=(7,)))


def test_unreadable_cell_is_flagged_not_raised(tmp_path, synth_root):
    root = _copy(synth_root, tmp_path / "d")
    recipe = load_recipe("smoke")
    records = select_records(root, recipe).val
    records[0].path.write_bytes(b"not an image")
    ds = CellDataset(records, recipe.preprocess)
    bad, good = ds[0], ds[1]
    assert bad["error"] and not good["error"]
    assert bad["x"].shape == good["x"].shape == (8, 3, 300, 300)
    raw = CellDataset(records, recipe.preprocess, raw=True)[0]
    assert raw["x"].dtype == torch.uint8 and raw["x"].shape == (450, 450, 3)


def test_augmentation_depends_on_seed_epoch_and_cell_only(synth_root):
    recipe = load_recipe("smoke")
    records = select_records(synth_root, recipe).train[:2]
    tf = TrainTransform(recipe.augment, recipe.preprocess)

    def sample(seed, epoch, index):
        ds = CellDataset(records, recipe.preprocess, tf, seed=seed)
        ds.set_epoch(epoch)
        return ds[index]["x"]

    assert torch.equal(sample(0, 1, 0), sample(0, 1, 0))  # fresh dataset, same draw: resumable
    assert not torch.equal(sample(0, 1, 0), sample(0, 2, 0))
    assert not torch.equal(sample(0, 1, 0), sample(1, 1, 0))
