"""Training augmentation: flips, rotation and shift only; never scaling or recolouring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeleuk.core.meta import Preprocess
from edgeleuk.training.augment import (
    AugmentParams,
    TrainTransform,
    apply_params,
    center_crop,
    draw_params,
    rotation_stack,
)
from edgeleuk.training.recipe import Augment

COLOURS = np.array([[200, 120, 230], [90, 40, 150]], dtype=np.uint8)  # cytoplasm, nucleus


def _cell(radius: int = 50, nucleus: int = 30, size: int = 450) -> np.ndarray:
    """A two-colour disk in the middle: any shift up to 20% of the crop keeps it inside."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    r2 = yy**2 + xx**2
    img = np.zeros((size, size, 3), np.uint8)
    img[r2 <= radius**2] = COLOURS[0]
    img[r2 <= nucleus**2] = COLOURS[1]
    return img


def _colour_counts(img: np.ndarray) -> np.ndarray:
    flat = img.reshape(-1, 3)
    return np.array([(flat == c).all(axis=1).sum() for c in COLOURS])


def test_no_scaling_and_no_recolouring_over_many_draws():
    pre = Preprocess()
    tf = TrainTransform(Augment(), pre)
    src = _cell()
    before = _colour_counts(np.asarray(center_crop(src, pre)))
    for k in range(150):
        out = np.asarray(tf.augmented_image(src, np.random.default_rng(k)))
        flat = out.reshape(-1, 3)
        cell = flat[flat.any(axis=1)]
        # Only the source colours survive: no colour jitter, no interpolated shades.
        assert len(cell) == _colour_counts(out).sum(), k
        # Nearest-neighbour rotation keeps each colour's area up to resampling noise; a 10% scale
        # would change it by ~20%.
        np.testing.assert_allclose(_colour_counts(out), before, rtol=0.03, err_msg=f"draw {k}")


def test_draws_cover_the_paper_ranges():
    aug = Augment()
    params = [draw_params(np.random.default_rng(k), aug, 300) for k in range(400)]
    angles = np.array([p.angle for p in params])
    shifts = np.array([p.shift for p in params])
    assert angles.min() < -300 and angles.max() > 300 and np.abs(angles).max() <= 360
    assert np.abs(shifts).max() <= 60 and np.abs(shifts).max() >= 55
    for flip in ("vflip", "hflip"):
        share = np.mean([getattr(p, flip) for p in params])
        assert 0.4 < share < 0.6, flip


def test_translation_moves_the_cell_by_the_drawn_shift():
    pre = Preprocess()
    img = center_crop(_cell(), pre)
    out = np.asarray(apply_params(img, AugmentParams(vflip=False, hflip=False, angle=0.0, shift=(40, -25))))
    ys, xs = np.nonzero(out.any(axis=2))
    assert (round(xs.mean()), round(ys.mean())) == (150 + 40, 150 - 25)


def test_same_rng_same_image():
    tf = TrainTransform(Augment(), Preprocess())
    a = tf(_cell(), np.random.default_rng([3, 1, 7]))
    b = tf(_cell(), np.random.default_rng([3, 1, 7]))
    c = tf(_cell(), np.random.default_rng([3, 2, 7]))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 300, 300) and a.dtype == torch.float32 and float(a.max()) <= 1.0


@pytest.mark.parametrize("rotations", [1, 8])
def test_validation_views_match_the_reference_path(tiny_checkpoint, rotations):
    from edgeleuk.modeling.checkpoint import load_checkpoint
    from edgeleuk.modeling.reference import TorchReference

    ckpt = load_checkpoint(tiny_checkpoint)
    meta = ckpt.meta.replace(preprocess=Preprocess(rotations=rotations))
    img = np.random.default_rng(0).integers(0, 256, (450, 450, 3), dtype=np.uint8)
    ours = rotation_stack(img, meta.preprocess)
    assert torch.equal(ours, TorchReference(ckpt, meta=meta).views(img))
