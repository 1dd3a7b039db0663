"""quality.measure: each measure answers to the change it is meant to see (SYNTHETIC cells)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.color import rgb2hed

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Preprocess
from edgeleuk.quality import measure
from edgeleuk.quality.measures import HED_STRIDE, STAIN_PERCENTILE
from edgeleuk.synth.shifts import normal_cells

SIZE, CROP = 450, 300


def _disk(radius: int, colour=(120, 60, 150), centre=(225, 225), size=SIZE, texture=True) -> np.ndarray:
    """A textured disk on black (texture: pixel noise, so the interior is in focus)."""
    img = np.zeros((size, size, 3), np.uint8)
    cv2.circle(img, centre, radius, colour, thickness=-1)
    if texture:
        noise = np.random.default_rng(0).integers(-12, 13, img.shape)
        inside = img.max(axis=2, keepdims=True) > 0
        img = np.clip(img.astype(int) + noise * inside, 0, 255).astype(np.uint8)
    return img


@pytest.fixture(scope="module")
def cell() -> np.ndarray:
    return next(normal_cells(1, seed=11))


def test_area_is_cell_pixels_over_crop_pixels():
    m = measure(_disk(100))
    assert m.area_frac == pytest.approx(np.pi * 100 ** 2 / CROP ** 2, rel=0.02)
    assert m.offset_frac == pytest.approx(0.0, abs=0.01)
    assert m.edge_frac == 0.0 and m.background_frac == 0.0


@pytest.mark.parametrize("move", [(90, 0), (-90, 0), (0, 90), (0, -90)])
def test_off_centre_and_edge_cut_and_background(move):
    moved = measure(_disk(100, centre=(225 + move[0], 225 + move[1])))
    assert moved.offset_frac == pytest.approx(90 / (CROP / 2), abs=0.02)
    # The disk crosses one border of the crop over about 2*sqrt(100^2 - 60^2) = 160 px.
    assert moved.edge_frac == pytest.approx(160 / (4 * CROP - 4), rel=0.1)
    assert moved.background_frac > 0.02


def test_background_counts_only_pixels_outside_the_crop():
    img = _disk(100)
    img[:20, :] = 90  # a band of background left by the segmentation, outside the crop
    m = measure(img)
    assert m.background_frac == pytest.approx(20 * SIZE / (SIZE ** 2 - CROP ** 2), rel=0.01)
    assert measure(_disk(100)).background_frac == 0.0


def test_blur_lowers_focus_and_the_outline_does_not_count(cell):
    sharp = measure(cell).focus
    blurred = measure(cv2.GaussianBlur(cell, (0, 0), 3)).focus
    assert blurred < sharp / 20
    # A flat disk has a sharp outline but no texture inside: focus ignores the outline.
    assert measure(_disk(100, texture=False)).focus == 0.0


def test_exposure_measures(cell):
    base = measure(cell)
    bright = measure(np.clip(cell.astype(np.float32) * 2, 0, 255).astype(np.uint8))
    assert bright.brightness > base.brightness * 1.4
    assert bright.clipped_frac > 0.2 > base.clipped_frac


def test_stain_densities_are_skimage_hed_of_the_cell_pixels(cell):
    m = measure(cell)
    sub = cell[75:375:HED_STRIDE, 75:375:HED_STRIDE]
    pixels = sub[sub.max(axis=2) > 10]
    hed = rgb2hed(pixels[None])[0]
    assert m.od_hematoxylin == pytest.approx(np.percentile(hed[:, 0], STAIN_PERCENTILE), rel=1e-9)
    assert m.od_eosin == pytest.approx(np.percentile(hed[:, 1], STAIN_PERCENTILE), rel=1e-9)
    purple, pink = measure(_disk(100, (90, 40, 140))), measure(_disk(100, (230, 130, 150)))
    assert purple.od_hematoxylin > 3 * pink.od_hematoxylin


def test_blank_images_measure_nothing():
    black = measure(np.zeros((SIZE, SIZE, 3), np.uint8))
    assert black.area_frac == 0.0 and black.contrast == 0.0
    grey = measure(np.full((SIZE, SIZE, 3), 128, np.uint8))
    assert grey.contrast == 0.0 and grey.background_frac == 1.0


def test_crop_comes_from_the_preprocessing():
    img = _disk(90)
    small = measure(img, Preprocess(crop=200))
    assert small.area_frac == pytest.approx(measure(img).area_frac * (CROP / 200) ** 2, rel=1e-6)
    big = _disk(120)  # inside the 300 px crop, across the border of a 200 px one
    assert measure(big).edge_frac == 0.0 == measure(big).background_frac
    assert measure(big, Preprocess(crop=200)).edge_frac > 0.1
    assert measure(big, Preprocess(crop=200)).background_frac > 0.01


@pytest.mark.parametrize("bad", [
    np.zeros((SIZE, SIZE, 3), np.float32), np.zeros((SIZE, SIZE), np.uint8),
    np.zeros((SIZE, SIZE, 4), np.uint8), np.zeros((100, 100, 3), np.uint8), "cell.bmp",
])
def test_refuses_what_is_not_a_decoded_cell(bad):
    with pytest.raises(UsageError):
        measure(bad)
