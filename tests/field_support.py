"""SYNTHETIC smear fields for the ``--fields`` workflow tests: white ground, grey squares for objects.

:func:`fake_find_cells` stands in for :func:`edgeleuk.fields.find_cells` where a test is about the
workflow, not the segmentation: every square is one object; squares under ``MIN_CELL`` pixels are
platelets, squares touching the edge are edge-cut cells, the rest are white cells whose crop is a
uniform image of the square's grey, so the brightness test model scores each by its grey (40:
HEM, 170: ALL). It returns the real :class:`edgeleuk.fields.FieldResult`.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.fields import EXCLUDED_KINDS, CellCrop, FieldResult, Outline

GROUND = 240
HEM_GREY, ALL_GREY = 40, 170
MIN_CELL = 100  # pixels: smaller squares are platelets
FAKE_SCALE = 0.5  # what the fake "estimates" when no scale is given

#: Two white cells (HEM then ALL in reading order), a platelet and a cell cut by the left edge.
BUSY = [(40, 40, 30, HEM_GREY), (200, 120, 40, ALL_GREY), (300, 30, 5, 100), (0, 200, 30, 90)]
#: One ALL cell.
ONE = [(100, 100, 30, ALL_GREY)]


def draw_field(squares: list[tuple[int, int, int, int]], shape: tuple[int, int] = (300, 400)) -> np.ndarray:
    """An RGB field with ``(x, y, side, grey)`` squares on a white ground."""
    img = np.full((*shape, 3), GROUND, np.uint8)
    for x, y, side, grey in squares:
        img[y : y + side, x : x + side] = grey
    return img


def write_field(path: Path, squares: list[tuple[int, int, int, int]], shape: tuple[int, int] = (300, 400),
                params: list[int] | None = None) -> Path:
    """Write a field image (the format follows the suffix; ``params`` go to ``cv2.imencode``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(draw_field(squares, shape), cv2.COLOR_RGB2BGR), params or [])
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _box(x: int, y: int, w: int, h: int) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.int32)


def fake_find_cells(field: np.ndarray, *, um_per_px: float | None, model_um_per_px: float, stain=None,
                    size: int = 450, scale_source: str = "flag") -> FieldResult:
    """The squares of a :func:`draw_field` field as white cells, platelets and edge-cut cells."""
    started = time.perf_counter()
    grey = field.mean(axis=2)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats((grey < 200).astype(np.uint8))
    cells, outlines = [], []
    excluded = dict.fromkeys(EXCLUDED_KINDS, 0)
    h, w = grey.shape
    um, source = (FAKE_SCALE, "red-cell-median") if um_per_px is None else (um_per_px, scale_source)
    for k in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        kind = "platelet" if area < MIN_CELL else "edge_cut" if 0 in (x, y) or x + bw == w or y + bh == h else ""
        if kind:
            excluded[kind] += 1
            outlines.append(Outline(kind, None, _box(x, y, bw, bh)))
            continue
        value = int(round(grey[labels == k].mean()))
        index = len(cells) + 1
        cells.append(CellCrop(index, (x, y, x + bw, y + bh), (float(centroids[k][0]), float(centroids[k][1])),
                              area * um * um, np.full((size, size, 3), value, np.uint8)))
        outlines.append(Outline("white_cell", index, _box(x, y, bw, bh)))
    return FieldResult(cells, excluded, outlines, um, source, time.perf_counter() - started)
