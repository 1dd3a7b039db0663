"""Recipes: the paper's values exactly, the ablations, and strict parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeleuk.core.errors import ConfigError, UsageError
from edgeleuk.core.meta import PAPER_ARCH
from edgeleuk.training.recipe import Recipe, load_recipe

TRAIN_DIR = Path(__file__).resolve().parents[2] / "edgeleuk" / "configs" / "recipes"


def test_paper_recipe_is_the_paper():
    r = load_recipe(TRAIN_DIR / "paper.toml")
    assert r.name == "paper"
    assert r.arch == PAPER_ARCH and r.pretrained == "imagenet"
    assert r.train_folds == (0, 1, 2) and r.val_split == "prelim"
    assert (r.epochs, r.batch_size) == (6, 16)
    assert r.lr.as_dict() == {"stages_1_2": 1e-6, "stages_3_5": 1e-4, "classifier": 1e-2}
    assert (r.lr_milestones, r.lr_gamma) == ((2, 4), 0.1)
    assert (r.augment.vflip, r.augment.hflip, r.augment.degrees, r.augment.translate) == (0.5, 0.5, 360.0, 0.2)
    p = r.preprocess
    assert (p.crop, p.rotations, p.mean, p.std) == (300, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert p.angles == [45.0 * i for i in range(8)]
    assert r.amp is False and r.max_train_images is None and r.max_val_images is None


def test_defaults_equal_the_paper_recipe():
    paper = load_recipe(TRAIN_DIR / "paper.toml")
    assert paper.identity() == Recipe(name="paper", pretrained="imagenet").identity()


def test_ablations():
    norot = load_recipe(TRAIN_DIR / "ablation-norot.toml")
    assert norot.preprocess.rotations == 1
    assert norot.lr.as_dict() == load_recipe("paper").lr.as_dict()
    for name, rate in (("ablation-nospeclr-1e3", 1e-3), ("ablation-nospeclr", 1e-4),
                       ("ablation-nospeclr-1e5", 1e-5)):
        r = load_recipe(name)
        assert set(r.lr.as_dict().values()) == {rate}, name
        assert r.preprocess.rotations == 8 and r.lr_milestones == (2, 4) and r.epochs == 6


@pytest.mark.parametrize("name", ["paper", "ablation-norot", "ablation-nospeclr", "ablation-nospeclr-1e3",
                                  "ablation-nospeclr-1e5", "smoke", "demo"])
def test_every_shipped_recipe_loads_by_name(name):
    assert load_recipe(name).name == name


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('arch = "seresnext_tiny"\nepoch = 3\n')
    with pytest.raises(ConfigError, match="epoch"):
        load_recipe(path)
    path.write_text('[augment]\nscale = 0.1\n')
    with pytest.raises(ConfigError, match="scale"):
        load_recipe(path)


@pytest.mark.parametrize("body", ['epochs = 0', 'device = "tpu"', '[lr]\nclassifier = -1.0',
                                  '[augment]\nhflip = 2.0', 'arch = "resnet"', 'val_tta = "fast"',
                                  'um_per_px = 0.0', 'um_per_px = 1e9'])
def test_invalid_values_are_errors(tmp_path, body):
    path = tmp_path / "bad.toml"
    path.write_text(body + "\n")
    with pytest.raises(ConfigError):
        load_recipe(path)


def test_invalid_rotations_are_a_usage_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[preprocess]\nrotations = 3\n")
    with pytest.raises(UsageError, match="rotations"):
        load_recipe(path)


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('arch = "seresnext_tiny"\n')
    assert load_recipe(path).name == "mine"
