"""find_cells on SYNTHETIC fields: scale, the black-out, edge cuts, touching pairs, exclusions."""

from __future__ import annotations

import numpy as np
import pytest

from edgeleuk.core.errors import UsageError
from edgeleuk.fields import FieldError, estimate_scale, find_cells, overlay_png
from edgeleuk.fields.cut import to_cnmc
from edgeleuk.synth.fields import draw_field

SMALL = (1024, 768)
MODEL_UM = 0.055


def _field(seed: int, **kw):
    return draw_field(np.random.default_rng([seed, 99]), size=kw.pop("size", SMALL), **kw)


@pytest.mark.parametrize("um", [0.06, 0.08, 0.15])
def test_scale_from_red_cells_within_5_percent(um):
    rgb, *_ = _field(1, um_per_px=um, size=(2048, 1536) if um < 0.1 else SMALL)
    est = estimate_scale(rgb)
    assert est is not None
    assert abs(est / um - 1) < 0.05, (est, um)


def test_scale_source_is_written():
    rgb, *_ = _field(2)
    assert find_cells(rgb, um_per_px=None, model_um_per_px=MODEL_UM).scale_source == "red-cell-median"
    res = find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM, scale_source="tiff")
    assert (res.scale_source, res.um_per_px) == ("tiff", 0.08)
    with pytest.raises(UsageError):
        find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM, scale_source="guess")
    with pytest.raises(UsageError):
        find_cells(rgb, um_per_px=0.08, model_um_per_px=0.0)


def test_a_field_without_red_cells_or_scale_is_an_error():
    blank = np.full((600, 800, 3), 240, np.uint8)
    with pytest.raises(FieldError, match="no scale"):
        find_cells(blank, um_per_px=None, model_um_per_px=MODEL_UM)
    res = find_cells(blank, um_per_px=0.08, model_um_per_px=MODEL_UM)
    assert res.cells == [] and sum(res.excluded.values()) == 0


def test_single_cells_are_found_cut_centred_and_sized():
    rgb, ids, objects, crops = _field(3, white_cells=3, pair=False, edge=False)
    truth = [o for o in objects if o["kind"] == "white_cell"]
    res = find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM)
    assert len(res.cells) == len(truth) == 3
    assert [c.index for c in res.cells] == [1, 2, 3]
    for cell in res.cells:
        assert cell.image.shape == (450, 450, 3) and cell.image.dtype == np.uint8
        t = min(truth, key=lambda o: np.hypot(o["centre"][0] - cell.centroid[0], o["centre"][1] - cell.centroid[1]))
        ys, xs = np.nonzero(ids == t["id"])
        assert np.hypot(xs.mean() - cell.centroid[0], ys.mean() - cell.centroid[1]) < 2
        assert cell.bbox[0] <= xs.min() + 2 and cell.bbox[2] >= xs.max() - 1
        drawn_area = float((ids == t["id"]).sum()) * 0.08 ** 2
        assert abs(cell.area_um2 / drawn_area - 1) < 0.1
        ys, xs = np.nonzero(cell.image.max(axis=2))
        assert abs(ys.mean() - 225) < 2 and abs(xs.mean() - 225) < 2  # centred on the cell
        # At the model's scale: the crop's cell covers the drawn area in model pixels.
        assert abs(len(ys) * MODEL_UM ** 2 / drawn_area - 1) < 0.12


def test_the_cut_blacks_out_everything_outside_the_mask():
    rng = np.random.default_rng(0)
    box = rng.integers(1, 256, (120, 140, 3), dtype=np.uint8)  # no black pixel anywhere
    mask = np.zeros((120, 140), np.uint8)
    yy, xx = np.mgrid[:120, :140]
    mask[(yy - 60) ** 2 + (xx - 70) ** 2 < 45 ** 2] = 1
    out = to_cnmc(box, mask, scale=1.5, size=450, stain=None)
    lit = out.max(axis=2) > 0
    area = lit.sum()
    assert abs(area / (mask.sum() * 1.5 ** 2) - 1) < 0.03
    ys, xs = np.nonzero(lit)
    r = np.sqrt((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    assert r.max() < 45 * 1.5 + 1.5  # nothing lit beyond the disk's rim
    assert to_cnmc(box, np.ones_like(mask), scale=10.0, size=450, stain=None) is None  # would not fit


def test_field_crops_have_no_pixel_of_the_background_or_a_neighbour():
    rgb, ids, objects, _ = _field(4, white_cells=2, pair=True, edge=False)
    res = find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM)
    assert len(res.cells) == 4
    for cell in res.cells:
        lit = (cell.image.max(axis=2) > 0).astype(np.uint8)
        import cv2

        n, _ = cv2.connectedComponents(lit)
        assert n == 2  # one cell, no speck of background or of the touching neighbour
        # The cell's own pixels: white-balanced bluish, none of the white background.
        pix = cell.image[lit > 0].astype(int)
        assert (pix.min(axis=1) > 235).mean() < 0.01


def test_touching_pair_is_two_cells():
    for seed in range(3):
        rgb, _, objects, _ = _field(10 + seed, white_cells=0, pair=True, edge=False)
        assert sum(o["kind"] == "white_cell" for o in objects) == 2
        res = find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM)
        assert len(res.cells) == 2, seed


def test_a_cell_cut_by_the_edge_is_counted_not_cut():
    for seed in range(3):
        rgb, _, objects, _ = _field(20 + seed, white_cells=0, pair=False, edge=True)
        assert [o["edge_cut"] for o in objects if o["kind"] == "white_cell"] == [True]
        res = find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM)
        assert res.cells == []
        assert res.excluded["edge_cut"] == 1
        assert any(o.kind == "edge_cut" for o in res.outlines)


def test_red_cells_and_platelets_are_counted_not_classified():
    rgb, _, objects, _ = _field(5, white_cells=0, pair=False, edge=False)
    res = find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM)
    assert res.cells == []
    drawn_red = sum(o["kind"] == "red_cell" for o in objects)
    drawn_platelets = sum(o["kind"] == "platelet" for o in objects)
    assert abs(res.excluded["red_cell"] / drawn_red - 1) < 0.15
    assert res.excluded["platelet"] >= drawn_platelets - 1


def test_overlay_is_a_png_of_the_field_and_checks_its_calls():
    rgb, *_ = _field(6, white_cells=2, pair=False, edge=True)
    res = find_cells(rgb, um_per_px=0.08, model_um_per_px=MODEL_UM)
    png = overlay_png(rgb, res, ["all", None])
    import cv2

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == rgb.shape[:2]
    assert (np.abs(img[:, :, ::-1].astype(int) - rgb).max(axis=2) > 60).mean() > 0.001  # something drawn
    with pytest.raises(ValueError):
        overlay_png(rgb, res, ["all"])
