"""Find the white cells of a smear field: colour thresholds, morphology and watershed (OpenCV).

Torch-free. Detection runs on a reduced copy of the field (about :data:`DETECT_UM_PER_PX`
micrometres a pixel, where a white cell is some 40 pixels across), the cut at full
resolution (:mod:`edgeleuk.fields.cut`). After white balance from the field's background:

* a white cell (nucleus and cytoplasm) is bluish: blue exceeds green by :data:`BLUE_CELL`;
  its nucleus is bluish *and* dark. Red cells are pink (blue close to green), the background white;
* a bluish object is split at the peaks of its distance transform, each pixel to the nearest peak
  (two touching cells are two peaks with a narrow neck between them);
* each piece is a white cell if it is round enough, has a nucleus and is 5.5-22 um across;
  a platelet if it is under 4.5 um; a cut cell if it touches the field's edge; else debris;
* red cells (darker than the background, not bluish; the pale centre filled) are counted, and
  their median diameter (about 7.5 um) gives the scale when nobody states it (:func:`estimate_scale`).
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import INPUT_SIZE
from edgeleuk.core.optics import RED_CELL_DIAMETER_UM, UM_PER_PX_RANGE, StainReference
from edgeleuk.fields.cut import cut_cells
from edgeleuk.fields.image import FIELD_MAX_PIXELS, FIELD_MIN_SIDE, FieldError
from edgeleuk.fields.masks import fill_holes, largest
from edgeleuk.fields.results import EXCLUDED_KINDS, SCALE_SOURCES, FieldResult, Outline, Piece
from edgeleuk.fields.stain import apply_gains, background_colour, white_balance_gains

#: Micrometres per pixel of the reduced copy the detection runs on.
DETECT_UM_PER_PX = 0.25
#: Longer side of the reduced copy :func:`estimate_scale` measures red cells on.
SCALE_SIDE = 1024
#: Blue minus green (white-balanced, 0..255) above which a pixel belongs to a white cell or platelet.
BLUE_CELL = 20
#: A nucleus pixel: blue minus green above this and green below :data:`NUCLEUS_GREEN`.
NUCLEUS_BLUE, NUCLEUS_GREEN = 34, 130
#: A red-cell pixel: green this much below the background (and not bluish).
RED_DARK = 40
#: Equivalent diameters (um): white cells within, platelets below the platelet bound.
WBC_DIAM_UM = (5.5, 22.0)
PLATELET_MAX_UM = 4.5
#: A distance-transform peak is where the distance exceeds this share of the object's largest one.
PEAK_SHARE = 0.45
#: Least share of a white cell's area that is nucleus, and least solidity (area / convex hull).
MIN_NUCLEUS_SHARE, MIN_SOLIDITY = 0.08, 0.85
#: A field whose bluish share is above this is crowded (no smear looks like that): refused.
CROWDED_SHARE = 0.35
#: The background (the brightest pixels) must average at least this (0..255) ...
DARKEST_BACKGROUND = 60
#: ... and its blue may exceed its green by at most this share (a lamp may be warm, not cells-blue).
BLUISH_BACKGROUND = 0.10
#: Most white cells cut from one field.
MAX_CELLS = 500


def check_field(rgb: np.ndarray) -> None:
    """Refuse an array that is no RGB uint8 field of a workable size (:class:`FieldError`)."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise FieldError(f"a field must be RGB uint8 [H, W, 3], got {got}")
    h, w = rgb.shape[:2]
    if h * w > FIELD_MAX_PIXELS:
        raise FieldError(f"field too large ({w} x {h}; at most {FIELD_MAX_PIXELS} pixels)")
    if min(h, w) < FIELD_MIN_SIDE:
        raise FieldError(f"field too small ({w} x {h}; at least {FIELD_MIN_SIDE} a side)")


def _check_background(background: np.ndarray) -> None:
    """Refuse a field whose brightest part is no empty slide: too dark, or bluish (cells everywhere)."""
    if float(background.mean()) < DARKEST_BACKGROUND:
        raise FieldError(f"field too dark (its brightest part averages {background.mean():.0f} of 255): "
                         "no lit background, so no white balance")
    if background[2] - background[1] > BLUISH_BACKGROUND * background[1]:
        raise FieldError("crowded field: no empty background visible (its brightest part is bluish, "
                         "as white cells are); no cells cut")


def _scale(value: float | None, what: str) -> float | None:
    lo, hi = UM_PER_PX_RANGE
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise UsageError(f"{what} must be micrometres per pixel in {lo}..{hi}, got {value!r}")
    return float(value)


def reduce(rgb: np.ndarray, factor: int) -> np.ndarray:
    """The field shrunk by an integer factor (area averaging), or itself for factor 1."""
    if factor <= 1:
        return rgb
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)


def _planes(rgb_wb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(blue minus green, green) as int16."""
    g = rgb_wb[..., 1].astype(np.int16)
    return rgb_wb[..., 2].astype(np.int16) - g, g


def _kernel(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def red_mask(rgb_wb: np.ndarray, blue: np.ndarray | None = None) -> np.ndarray:
    """Red cells (uint8 0/1): darker than the background in green, not bluish, pale centres filled."""
    bx, g = _planes(rgb_wb)
    if blue is None:
        blue = (bx > BLUE_CELL).astype(np.uint8)
    red = ((g < 255 - RED_DARK) & (cv2.dilate(blue, _kernel(3)) == 0)).astype(np.uint8)
    return fill_holes(cv2.morphologyEx(red, cv2.MORPH_OPEN, _kernel(3)))


def _round_diameters(mask: np.ndarray) -> np.ndarray:
    """Equivalent diameters (px) of the round, convex, single objects in ``mask``."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = []
    for c in contours:
        area = cv2.contourArea(c)
        if area < 30:
            continue
        perim = cv2.arcLength(c, True)
        hull = cv2.contourArea(cv2.convexHull(c))
        if 4 * math.pi * area / max(perim * perim, 1e-6) > 0.75 and area / max(hull, 1e-6) > 0.95:
            # The contour runs through the boundary pixels' centres: half a pixel inside the object.
            out.append(2.0 * math.sqrt((area + perim / 2) / math.pi))
    return np.asarray(out, np.float64)


def _overview(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """The field reduced to at most :data:`SCALE_SIDE` on its longer side, and the factor."""
    factor = max(1, math.ceil(max(rgb.shape[:2]) / SCALE_SIDE))
    return reduce(rgb, factor), factor


def _scale_of(wb: np.ndarray, factor: float, min_cells: int) -> float | None:
    diam = _round_diameters(red_mask(wb))
    if len(diam) < min_cells:
        return None
    med = float(np.median(diam))
    typical = diam[(diam > 0.7 * med) & (diam < 1.4 * med)]  # drop fragments and merged pairs
    med = float(np.median(typical)) if len(typical) >= min_cells else med
    um = RED_CELL_DIAMETER_UM / (med * factor)
    return um if UM_PER_PX_RANGE[0] <= um <= UM_PER_PX_RANGE[1] else None


def estimate_scale(rgb: np.ndarray, *, min_cells: int = 8) -> float | None:
    """Micrometres per pixel from the median diameter of the field's single red cells (about 7.5 um).

    Args:
        rgb: The field, uint8 RGB.
        min_cells: Fewest round, single red cells to trust a median of.

    Returns:
        The scale, or None when fewer than ``min_cells`` single red cells are found.
    """
    check_field(rgb)
    small, factor = _overview(rgb)
    return _scale_of(apply_gains(small, white_balance_gains(background_colour(small))), factor, min_cells)


def _split(mask: np.ndarray, min_peak_px: float) -> list[np.ndarray]:
    """Split one bluish object at the peaks of its distance transform; masks over the object's box.

    Each pixel goes to the nearest peak: for round cells that is the watershed of the distance
    transform, and two touching cells part at their neck. (A watershed on the colours would not do:
    a cell's nucleus edge is a steeper gradient than the seam between two cytoplasms.)
    """
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    dmax = float(dist.max())
    peaks = (dist > max(PEAK_SHARE * dmax, min_peak_px)).astype(np.uint8)
    n, markers = cv2.connectedComponents(peaks)
    if n <= 2:  # background + one peak: nothing to split
        return [mask]
    # Distances to the nearest peak pixel, labelled by that peak's connected component.
    _, nearest = cv2.distanceTransformWithLabels(1 - peaks, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP)
    parts = []
    for k in range(1, n):
        lab = int(nearest[markers == k][0])
        part = ((nearest == lab) & (mask > 0)).astype(np.uint8)
        parts.append(largest(part))
    return parts


def _classify(piece: np.ndarray, nucleus: np.ndarray, um: float, at_edge: bool) -> str:
    area = int(piece.sum())
    diam = 2.0 * math.sqrt(area / math.pi) * um
    if diam < PLATELET_MAX_UM:
        return "platelet"
    if at_edge:
        return "edge_cut"
    if not WBC_DIAM_UM[0] <= diam <= WBC_DIAM_UM[1]:
        return "debris"
    contours, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(max(contours, key=cv2.contourArea)))
    solid = area / max(hull, 1.0)
    nuc = float((nucleus & piece).sum()) / area
    return "white_cell" if solid >= MIN_SOLIDITY and nuc >= MIN_NUCLEUS_SHARE else "debris"


def detect(wb: np.ndarray, work_um: float) -> tuple[list[Piece], np.ndarray]:
    """Bluish objects of a white-balanced reduced field, split and classified; and the bluish mask."""
    bx, g = _planes(wb)
    blue = (bx > BLUE_CELL).astype(np.uint8)
    blue = cv2.morphologyEx(blue, cv2.MORPH_OPEN, _kernel(3))
    blue = fill_holes(cv2.morphologyEx(blue, cv2.MORPH_CLOSE, _kernel(3)))
    h, w = blue.shape
    if blue.mean() > CROWDED_SHARE:
        raise FieldError(f"crowded field: {100 * blue.mean():.0f} % of it is white cells or platelets "
                         f"(a smear's monolayer has a few %); no cells cut")
    nucleus = ((bx > NUCLEUS_BLUE) & (g < NUCLEUS_GREEN)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(blue, connectivity=8)
    pieces: list[Piece] = []
    min_peak = 0.5 * WBC_DIAM_UM[0] / 2 / work_um
    for k in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        sl = (slice(y, y + bh), slice(x, x + bw))
        mask = (labels[sl] == k).astype(np.uint8)
        diam = 2.0 * math.sqrt(area / math.pi) * work_um
        parts = [mask] if diam < 1.5 * WBC_DIAM_UM[0] else _split(mask, min_peak)
        for part in parts:
            ys, xs = np.nonzero(part)
            if len(ys) == 0:
                continue
            py0, py1, px0, px1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            sub = part[py0:py1, px0:px1]
            gx0, gy0 = x + int(px0), y + int(py0)
            at_edge = gx0 == 0 or gy0 == 0 or gx0 + sub.shape[1] >= w or gy0 + sub.shape[0] >= h
            nuc = nucleus[gy0:gy0 + sub.shape[0], gx0:gx0 + sub.shape[1]]
            pieces.append(Piece(sub, gx0, gy0, _classify(sub, nuc, work_um, at_edge)))
    return pieces, blue


def count_red_cells(red: np.ndarray, work_um: float) -> tuple[int, list[np.ndarray]]:
    """Red cells in a red-cell mask (a clump counts by its area) and their contours."""
    contours, _ = cv2.findContours(red, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    single = math.pi * (RED_CELL_DIAMETER_UM / 2 / work_um) ** 2
    kept, count = [], 0
    for c in contours:
        area = cv2.contourArea(c)
        if area >= 0.25 * single:
            kept.append(c)
            count += max(1, round(area / single))
    return count, kept


def find_cells(field: np.ndarray, *, um_per_px: float | None, model_um_per_px: float,
               stain: StainReference | None = None, size: int = INPUT_SIZE,
               scale_source: str = "flag") -> FieldResult:
    """Find the white cells of one field and cut each to the C-NMC form.

    Args:
        field: The field, uint8 RGB ``[H, W, 3]`` (:func:`~edgeleuk.fields.image.read_field`).
        um_per_px: The field's scale; None: estimated from its red cells (``"red-cell-median"``).
        model_um_per_px: The scale of the model's training cells (``ModelMeta.um_per_px``).
        stain: Normalise each cell's colours to this reference; None: white balance only.
        size: Side of each crop (the model's input size).
        scale_source: Where ``um_per_px`` came from when given: ``"flag"`` or ``"tiff"``.

    Returns:
        A :class:`FieldResult`; ``cells`` is empty for a field without a white cell.

    Raises:
        FieldError: Not an RGB uint8 field of a workable size, no scale given and none
            measurable from red cells, or crowded beyond any smear.
        UsageError: A scale out of range, or an unknown ``scale_source``.
    """
    start = time.perf_counter()
    check_field(field)
    model_um = _scale(model_um_per_px, "model_um_per_px")
    um = _scale(um_per_px, "um_per_px")
    if um is not None and scale_source not in SCALE_SOURCES[:2]:
        raise UsageError(f"scale_source must be one of {SCALE_SOURCES[:2]}, got {scale_source!r}")
    # One pass over the full field: an overview for the background and the scale; detection works
    # on the overview (or the field itself, when the scale asks for more detail than the overview has).
    small, f0 = _overview(field)
    background = background_colour(small)
    _check_background(background)
    gains = white_balance_gains(background)
    if um is None:
        um, scale_source = _scale_of(apply_gains(small, gains), f0, 8), "red-cell-median"
        if um is None:
            raise FieldError("no scale: the field states none and has too few single red cells to measure; "
                             "give the field's micrometres per pixel (--um-per-px)")
    factor = max(1, int(DETECT_UM_PER_PX / um))
    size_wh = (max(1, field.shape[1] // factor), max(1, field.shape[0] // factor))
    if factor >= f0:
        wb = apply_gains(cv2.resize(small, size_wh, interpolation=cv2.INTER_AREA), gains)
    else:
        wb = apply_gains(reduce(field, factor), gains)
    work_um = um * field.shape[1] / wb.shape[1]
    pieces, blue = detect(wb, work_um)
    whites = [p for p in pieces if p.kind == "white_cell"]
    if len(whites) > MAX_CELLS:
        raise FieldError(f"{len(whites)} white cells in one field (at most {MAX_CELLS}): no smear looks like that")
    red_count, red_contours = count_red_cells(red_mask(wb, blue), work_um)
    sx, sy = field.shape[1] / wb.shape[1], field.shape[0] / wb.shape[0]
    cells, outlines, refused = cut_cells(field, gains, whites, pieces, sx=sx, sy=sy, um=um, model_um=model_um,
                                         stain=stain, size=size)
    excluded = {kind: 0 for kind in EXCLUDED_KINDS}
    excluded["red_cell"] = red_count
    excluded["debris"] += refused
    for p in pieces:
        if p.kind != "white_cell":
            excluded[p.kind] += 1
            outlines.extend(_outlines(p.mask, p.kind, p.x0, p.y0, sx, sy))
    for c in red_contours:
        outlines.append(Outline("red_cell", None, _scaled(c, 0, 0, sx, sy)))
    return FieldResult(cells=cells, excluded=excluded, outlines=outlines, um_per_px=um,
                       scale_source=scale_source, seconds=time.perf_counter() - start)


def _scaled(contour: np.ndarray, x0: int, y0: int, sx: float, sy: float) -> np.ndarray:
    pts = contour.reshape(-1, 2).astype(np.float32)
    pts[:, 0] = (pts[:, 0] + x0 + 0.5) * sx
    pts[:, 1] = (pts[:, 1] + y0 + 0.5) * sy
    return np.rint(pts).astype(np.int32)


def _outlines(mask: np.ndarray, kind: str, x0: int, y0: int, sx: float, sy: float) -> list[Outline]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [Outline(kind, None, _scaled(c, x0, y0, sx, sy)) for c in contours]
