"""ModelMeta's scale and stain reference; Reinhard normalisation over a cell's mask."""

from __future__ import annotations

import numpy as np
import pytest

from edgeleuk.core.errors import CheckpointError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.core.optics import StainReference
from edgeleuk.fields.stain import lab_stats, normalise, reference_from_cells

REF = StainReference(lab_mean=(55.0, 20.0, -25.0), lab_std=(12.0, 6.0, 8.0), cells=10)


def test_scale_and_stain_round_trip_through_json():
    meta = ModelMeta(um_per_px=0.055, stain_reference=REF)
    back = ModelMeta.from_json(meta.to_json())
    assert back == meta and back.um_per_px == 0.055 and back.stain_reference == REF


def test_models_made_before_the_fields_load_with_none():
    d = ModelMeta().to_dict()
    del d["um_per_px"], d["stain_reference"]
    meta = ModelMeta.from_dict(d)
    assert meta.um_per_px is None and meta.stain_reference is None


@pytest.mark.parametrize("bad", [0.0, -1.0, 1e9, float("nan"), "0.05", True])
def test_implausible_scales_are_refused(bad):
    d = ModelMeta().to_dict()
    d["um_per_px"] = bad
    with pytest.raises(CheckpointError, match="um_per_px"):
        ModelMeta.from_dict(d)


@pytest.mark.parametrize("stain", [
    {"method": "macenko", "lab_mean": [50, 0, 0], "lab_std": [1, 1, 1]},
    {"lab_mean": [50, 0, 0], "lab_std": [1, 0, 1]},
    {"lab_mean": [50, 0], "lab_std": [1, 1, 1]},
    {"lab_mean": [50, 0, 0], "lab_std": [1, 1, 1], "extra": 1},
    [1, 2, 3],
])
def test_malformed_stain_references_are_refused(stain):
    d = ModelMeta().to_dict()
    d["stain_reference"] = stain
    with pytest.raises(CheckpointError, match="stain_reference"):
        ModelMeta.from_dict(d)


def _cell(rng, colour):
    img = np.zeros((100, 100, 3), np.uint8)
    yy, xx = np.mgrid[:100, :100]
    mask = ((yy - 50) ** 2 + (xx - 50) ** 2 < 35 ** 2).astype(np.uint8)
    img[mask > 0] = np.clip(rng.normal(colour, 12.0, (int(mask.sum()), 3)), 1, 255).astype(np.uint8)
    return img, mask


def test_normalisation_moves_the_cell_to_the_reference_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    img, mask = _cell(rng, (150, 110, 190))
    img[0, 0] = (9, 9, 9)  # outside the mask: must stay as it is
    out = normalise(img, mask, REF)
    mean, std = lab_stats(out, mask)
    assert np.allclose(mean, REF.lab_mean, atol=1.0) and np.allclose(std, REF.lab_std, rtol=0.1, atol=0.6)
    assert tuple(out[0, 0]) == (9, 9, 9) and np.array_equal(out[mask == 0], img[mask == 0])


def test_reference_from_cells_pools_the_cells_pixels_only():
    rng = np.random.default_rng(1)
    cells = [_cell(rng, (150, 110, 190))[0] for _ in range(3)]
    ref = reference_from_cells(cells)
    mean, _ = lab_stats(cells[0], cells[0].max(axis=2) > 8)
    assert ref.cells == 3 and np.allclose(ref.lab_mean, mean, atol=1.0)
    with pytest.raises(ValueError):
        reference_from_cells([np.zeros((10, 10, 3), np.uint8)])


def test_training_scale_is_stated_or_recorded_by_synth(tmp_path, synth_root):
    from edgeleuk.core.optics import SYNTH_UM_PER_PX
    from edgeleuk.synth.dataset import recorded_scale
    from edgeleuk.training.optics import training_scale
    from edgeleuk.training.recipe import load_recipe

    assert recorded_scale(synth_root) == SYNTH_UM_PER_PX
    assert training_scale(synth_root, None) == SYNTH_UM_PER_PX
    assert training_scale(synth_root, 0.1) == 0.1  # the recipe's word wins
    assert training_scale(tmp_path, None) is None  # real data, nothing stated
    (tmp_path / "SYNTHETIC.txt").write_text("SYNTHETIC\nsubjects=5\n")  # written before scales were recorded
    assert recorded_scale(tmp_path) is None
    recipe = tmp_path / "r.toml"
    recipe.write_text('arch = "seresnext_tiny"\num_per_px = 0.09\n')
    assert load_recipe(recipe).um_per_px == 0.09
