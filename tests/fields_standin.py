"""A test stand-in for ``edgeleuk.fields`` (the interface of issue #21), used only where the package is absent.

It keeps the names and attributes the workflow reads (``read_field``, ``find_cells``,
``overlay_png``; ``FieldImage``, ``FieldResult``, ``CellCrop``) with a trivial segmentation: every
connected blob darker than the background is an object; blobs under ``MIN_CELL`` pixels are
platelets, blobs touching the edge are edge-cut cells, the rest are white cells whose crop is a
uniform image of the blob's mean grey (so the brightness test model scores it by that grey).
SYNTHETIC, for workflow tests only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.errors import DataError

MIN_CELL = 100  # pixels: smaller blobs are platelets
BACKGROUND = 200  # grey levels above this are background


@dataclass(frozen=True)
class FieldImage:
    rgb: np.ndarray
    um_per_px: float | None = None
    scale_source: str | None = None


@dataclass(frozen=True)
class CellCrop:
    index: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area_um2: float
    image: np.ndarray


@dataclass(frozen=True)
class FieldResult:
    cells: list[CellCrop]
    excluded: dict[str, int]
    outlines: list = field(default_factory=list)
    um_per_px: float = 0.5
    scale_source: str = "red-cell-median"
    seconds: float = 0.0


def read_field(path, *, max_pixels: int = 64_000_000) -> FieldImage:
    data = Path(path).read_bytes()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise DataError(f"{Path(path).name}: not a readable image")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise DataError(f"{Path(path).name}: more than {max_pixels} pixels")
    return FieldImage(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def find_cells(field, *, um_per_px, model_um_per_px, stain=None, size=450) -> FieldResult:
    started = time.perf_counter()
    grey = field.mean(axis=2)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats((grey < BACKGROUND).astype(np.uint8))
    cells, excluded = [], {"red_cell": 0, "platelet": 0, "debris": 0, "edge_cut": 0}
    h, w = grey.shape
    scale = 0.5 if um_per_px is None else um_per_px
    for k in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        if area < MIN_CELL:
            excluded["platelet"] += 1
        elif x == 0 or y == 0 or x + bw == w or y + bh == h:
            excluded["edge_cut"] += 1
        else:
            value = int(round(grey[labels == k].mean()))
            cells.append(CellCrop(len(cells) + 1, (x, y, x + bw, y + bh), tuple(map(float, centroids[k])),
                                  area * scale * scale, np.full((size, size, 3), value, np.uint8)))
    return FieldResult(cells, excluded, [], scale, "flag" if um_per_px else "red-cell-median",
                       time.perf_counter() - started)


def overlay_png(field, result, calls) -> bytes:
    bgr = cv2.cvtColor(np.ascontiguousarray(field), cv2.COLOR_RGB2BGR)
    for cell, call in zip(result.cells, calls, strict=True):
        x0, y0, x1, y1 = cell.bbox
        colour = (0, 0, 255) if call == "all" else (255, 0, 0)
        cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, 2)
    return cv2.imencode(".png", bgr)[1].tobytes()


def install() -> None:
    """Serve this module as ``edgeleuk.fields`` (only call it when the real package is absent)."""
    import edgeleuk

    sys.modules["edgeleuk.fields"] = sys.modules[__name__]
    edgeleuk.fields = sys.modules[__name__]  # type: ignore[attr-defined]
