"""What finding cells in a field returns: the crops, the excluded counts and the outlines.

Torch-free data classes shared by :mod:`edgeleuk.fields.segment` (detection) and
:mod:`edgeleuk.fields.cut` (the C-NMC form).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The kinds of objects not classified, in the order they are reported.
EXCLUDED_KINDS = ("red_cell", "platelet", "debris", "edge_cut")
#: Where a field's scale came from: the user's flag, the file's TIFF tags, or its red cells.
SCALE_SOURCES = ("flag", "tiff", "red-cell-median")


@dataclass(frozen=True, eq=False)
class Outline:
    """One object's outline for the overlay.

    Attributes:
        kind: ``"white_cell"`` or one of :data:`EXCLUDED_KINDS`.
        index: The white cell's 1-based index; None for excluded objects.
        points: Closed polygon in field pixels, int32 ``[N, 2]`` as (x, y).
    """

    kind: str
    index: int | None
    points: np.ndarray


@dataclass(frozen=True, eq=False)
class CellCrop:
    """One white cell cut from a field in the C-NMC form.

    Attributes:
        index: 1-based, in reading order (rows of about one cell's height, left to right).
        bbox: ``(x0, y0, x1, y1)`` in field pixels, end exclusive.
        centroid: ``(x, y)`` of the cell's mask in field pixels.
        area_um2: The mask's area in square micrometres.
        image: uint8 ``[size, size, 3]``: white-balanced, optionally stain-normalised, at the
            model's scale, centred, black outside the cell's mask.
    """

    index: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area_um2: float
    image: np.ndarray


@dataclass(frozen=True, eq=False)
class FieldResult:
    """What :func:`find_cells` found in one field.

    Attributes:
        cells: The white cells, in reading order.
        excluded: Objects not classified, counted by kind (every kind of :data:`EXCLUDED_KINDS`).
        outlines: Every object's outline, for :func:`~edgeleuk.fields.overlay.overlay_png`.
        um_per_px: The field's scale used for the cut.
        scale_source: ``"flag"``, ``"tiff"`` or ``"red-cell-median"``.
        seconds: Segmentation and cutting time.
    """

    cells: list[CellCrop]
    excluded: dict[str, int]
    outlines: list[Outline] = field(default_factory=list)
    um_per_px: float = 0.0
    scale_source: str = "flag"
    seconds: float = 0.0


@dataclass
class Piece:
    """One bluish object after the watershed, at detection resolution (global coordinates)."""

    mask: np.ndarray  # uint8 0/1 over the bbox
    x0: int
    y0: int
    kind: str = "debris"


