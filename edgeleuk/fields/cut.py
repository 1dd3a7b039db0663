"""Cut each white cell from the full-resolution field into the C-NMC form.

Torch-free. The detection's mask (reduced resolution) is scaled up and refined on the
field's own pixels (the same bluish threshold), so the outline is the cell's, not the
reduced copy's. Then, as the C-NMC organisers' crops were made: white-balanced, optionally
stain-normalised (:mod:`edgeleuk.fields.stain`), resampled to the model's micrometres per
pixel (cell size is diagnostic: the cell keeps its true size), centred on the mask's
centroid in a ``size x size`` square, black outside the mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgeleuk.core.optics import StainReference
from edgeleuk.fields.masks import fill_holes, largest
from edgeleuk.fields.results import CellCrop, Outline, Piece
from edgeleuk.fields.stain import apply_gains, normalise

#: The cell's longest side may take at most this share of the crop after resampling; a bigger
#: object is no white cell at the model's scale and counts as debris.
MAX_CELL_SHARE = 0.98
#: Blue minus green (white-balanced) of a white cell's pixel at full resolution (as in detection).
_BLUE_CELL = 20


def _full_mask(field: np.ndarray, gains: np.ndarray, piece: Piece, others: list[Piece],
               sx: float, sy: float) -> tuple[np.ndarray, int, int, np.ndarray] | None:
    """The cell's mask at full resolution over a padded box: (mask, x0, y0, white-balanced box)."""
    h, w = field.shape[:2]
    ph, pw = piece.mask.shape
    pad = int(2 * max(sx, sy)) + 2
    x0, y0 = max(0, int(piece.x0 * sx) - pad), max(0, int(piece.y0 * sy) - pad)
    x1, y1 = min(w, int((piece.x0 + pw) * sx) + pad), min(h, int((piece.y0 + ph) * sy) + pad)
    # The detection labels (this cell 1, touching neighbours 2) over the box, at full resolution.
    lab = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for value, p in [(2, o) for o in others] + [(1, piece)]:
        qh, qw = p.mask.shape
        ax0, ay0 = int(round(p.x0 * sx)) - x0, int(round(p.y0 * sy)) - y0
        ax1, ay1 = int(round((p.x0 + qw) * sx)) - x0, int(round((p.y0 + qh) * sy)) - y0
        if ax1 <= 0 or ay1 <= 0 or ax0 >= lab.shape[1] or ay0 >= lab.shape[0]:
            continue
        up = cv2.resize(p.mask, (ax1 - ax0, ay1 - ay0), interpolation=cv2.INTER_NEAREST)
        cx0, cy0 = max(0, -ax0), max(0, -ay0)
        dst = lab[ay0 + cy0:ay1, ax0 + cx0:ax1]
        src = up[cy0:cy0 + dst.shape[0], cx0:cx0 + dst.shape[1]]
        dst[src > 0] = value
    box = apply_gains(field[y0:y1, x0:x1], gains)
    smooth = cv2.GaussianBlur(box, (3, 3), 0)  # the camera's pixel noise, not the cell's edge
    bluish = (smooth[..., 2].astype(np.int16) - smooth[..., 1].astype(np.int16)) > _BLUE_CELL
    grow = int(max(sx, sy)) * 2 + 1
    near = cv2.dilate((lab == 1).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    mask = (bluish & (near > 0) & (lab != 2)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    mask = fill_holes(largest(mask))  # holes: a nucleolus, a pale spot
    return (mask, x0, y0, box) if mask.any() else None


def to_cnmc(box: np.ndarray, mask: np.ndarray, *, scale: float, size: int,
            stain: StainReference | None) -> np.ndarray | None:
    """A white-balanced box and its cell mask as the C-NMC form; None if the cell would not fit.

    Args:
        box: White-balanced pixels around the cell, uint8 RGB.
        mask: The cell's mask over ``box`` (0/1).
        scale: Model pixels per field pixel (field um/px divided by model um/px).
        size: Side of the output square.
        stain: Reinhard reference, or None.
    """
    h, w = mask.shape
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    ys, xs = np.nonzero(mask)
    extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) * scale
    if extent > MAX_CELL_SHARE * size or nw * nh > 16 * size * size:
        return None
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(box, (nw, nh), interpolation=interp)
    mk = cv2.resize(mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR) >= 0.5
    if not mk.any():
        return None
    if stain is not None:
        img = normalise(img, mk, stain)
    img = np.where(mk[..., None], img, 0).astype(np.uint8)
    ys, xs = np.nonzero(mk)
    cy, cx = float(ys.mean()), float(xs.mean())
    out = np.zeros((size, size, 3), np.uint8)
    oy, ox = int(round(size / 2 - cy - 0.5)), int(round(size / 2 - cx - 0.5))
    sy0, sx0 = max(0, -oy), max(0, -ox)
    sy1, sx1 = min(nh, size - oy), min(nw, size - ox)
    out[oy + sy0:oy + sy1, ox + sx0:ox + sx1] = img[sy0:sy1, sx0:sx1]
    return out


def cut_cells(field: np.ndarray, gains: np.ndarray, whites: list[Piece], pieces: list[Piece], *,
              sx: float, sy: float, um: float, model_um: float, stain: StainReference | None,
              size: int) -> tuple[list[CellCrop], list[Outline], int]:
    """Cut every white cell: crops in reading order, their outlines, and how many did not fit (debris)."""
    found = []
    refused = 0
    for piece in whites:
        ph, pw = piece.mask.shape
        others = [o for o in pieces if o is not piece and o.x0 < piece.x0 + pw + 2 and piece.x0 < o.x0
                  + o.mask.shape[1] + 2 and o.y0 < piece.y0 + ph + 2 and piece.y0 < o.y0 + o.mask.shape[0] + 2]
        got = _full_mask(field, gains, piece, others, sx, sy)
        image = None if got is None else to_cnmc(got[3], got[0], scale=um / model_um, size=size, stain=stain)
        if image is None:
            refused += 1
            continue
        mask, x0, y0, _ = got
        ys, xs = np.nonzero(mask)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        points = max(contours, key=cv2.contourArea).reshape(-1, 2) + np.array([x0, y0])
        bbox = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
        found.append((bbox, (x0 + float(xs.mean()), y0 + float(ys.mean())), len(ys) * um * um, image,
                      points.astype(np.int32)))
    band = 15.0 / um  # reading order: rows about one large cell high, left to right in a row
    found.sort(key=lambda f: (int(f[1][1] // band), f[1][0]))
    cells, outlines = [], []
    for i, (bbox, centroid, area, image, points) in enumerate(found, start=1):
        cells.append(CellCrop(index=i, bbox=bbox, centroid=centroid, area_um2=float(area), image=image))
        outlines.append(Outline("white_cell", i, points))
    return cells, outlines, refused
