"""SYNTHETIC smear fields for the ``--fields`` workflow tests: white ground, grey squares for cells.

With the test stand-in segmentation (tests/fields_standin.py) or a fake ``find_cells`` each square
is one object; the brightness test model scores a cell by its grey (40: HEM, 170: ALL).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

GROUND = 240
HEM_GREY, ALL_GREY = 40, 170


def draw_field(squares: list[tuple[int, int, int, int]], shape: tuple[int, int] = (300, 400)) -> np.ndarray:
    """An RGB field with ``(x, y, side, grey)`` squares on a white ground."""
    img = np.full((*shape, 3), GROUND, np.uint8)
    for x, y, side, grey in squares:
        img[y : y + side, x : x + side] = grey
    return img


def write_field(path: Path, squares: list[tuple[int, int, int, int]], shape: tuple[int, int] = (300, 400)) -> Path:
    """Write a field image (the format follows the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(draw_field(squares, shape), cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


#: Two white cells (HEM then ALL in reading order), a platelet and a cell cut by the left edge.
BUSY = [(40, 40, 30, HEM_GREY), (200, 120, 40, ALL_GREY), (300, 30, 5, 100), (0, 200, 30, 90)]
#: One ALL cell.
ONE = [(100, 100, 30, ALL_GREY)]
