"""Helpers for the training tests: a recipe small enough to train in a second or two on CPU."""

from __future__ import annotations

from edgeleuk.core.meta import Preprocess
from edgeleuk.training.recipe import Recipe, load_recipe

#: A 96-pixel crop and 4 rotations: same code paths as smoke.toml at a fraction of the compute.
FAST_PREPROCESS = Preprocess(crop=96, rotations=4)


def fast_recipe(**changes) -> Recipe:
    """The ``smoke`` recipe shrunk further; ``changes`` override any field."""
    base = load_recipe("smoke").replace(name="fast", preprocess=FAST_PREPROCESS)
    return base.replace(**changes)


FAST_TOML = """
name = "fast"
arch = "seresnext_tiny"
epochs = 1
batch_size = 4
max_train_images = 8
max_val_images = 6
num_workers = 0
deterministic = true
device = "cpu"
threads = 1

[preprocess]
crop = 96
rotations = 4
"""
