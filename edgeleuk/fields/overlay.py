"""One PNG per field: every white cell outlined, numbered and coloured by its call; excluded objects faint.

Torch-free (OpenCV). The numbers are the cells' indices (the ``cell`` column of the rows),
so a row can be found on the picture and a picture's cell in the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgeleuk.fields.results import FieldResult

#: Outline colours (RGB): the positive call, any other call, no call (an error or not classified).
POSITIVE_RGB, NEGATIVE_RGB, NO_CALL_RGB = (230, 30, 30), (20, 160, 60), (240, 190, 0)
#: Excluded objects' colours (RGB), drawn faint.
EXCLUDED_RGB = {"red_cell": (150, 60, 60), "platelet": (90, 60, 160), "debris": (90, 90, 90),
                "edge_cut": (0, 120, 200)}
FAINT = 0.35


def _colour(call: str | None, positive: str) -> tuple[int, int, int]:
    if call is None:
        return NO_CALL_RGB
    return POSITIVE_RGB if call.casefold() == positive.casefold() else NEGATIVE_RGB


def overlay_png(field: np.ndarray, result: FieldResult, calls: Sequence[str | None], *,
                positive: str = "all") -> bytes:
    """The field with its objects drawn, as PNG bytes.

    Args:
        field: The field, uint8 RGB (as given to :func:`~edgeleuk.fields.segment.find_cells`).
        result: What ``find_cells`` found in it.
        calls: One class name per cell of ``result.cells`` (in order), None where a cell has no call.
        positive: The positive class's name (drawn red; other calls green, no call amber).

    Raises:
        ValueError: ``calls`` does not have one entry per cell.
    """
    if len(calls) != len(result.cells):
        raise ValueError(f"{len(calls)} calls for {len(result.cells)} cells")
    h, w = field.shape[:2]
    thick = max(1, round(max(h, w) / 800))
    faint = field.copy()
    for o in result.outlines:
        if o.kind != "white_cell":
            cv2.polylines(faint, [o.points.reshape(-1, 1, 2)], True, EXCLUDED_RGB.get(o.kind, (90, 90, 90)), thick)
    canvas = cv2.addWeighted(faint, FAINT, field, 1.0 - FAINT, 0.0)
    by_index = {c.index: call for c, call in zip(result.cells, calls, strict=True)}
    font, fscale = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, max(h, w) / 1600)
    for o in result.outlines:
        if o.kind != "white_cell" or o.index is None:
            continue
        colour = _colour(by_index.get(o.index), positive)
        cv2.polylines(canvas, [o.points.reshape(-1, 1, 2)], True, colour, thick * 2, cv2.LINE_AA)
        x, y = int(o.points[:, 0].max()) + 2 * thick, int(o.points[:, 1].min()) + 12 * thick
        label = str(o.index)
        cv2.putText(canvas, label, (x, y), font, fscale, (255, 255, 255), thick * 3 + 2, cv2.LINE_AA)
        cv2.putText(canvas, label, (x, y), font, fscale, colour, thick + 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(canvas[:, :, ::-1]))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB as PNG
        raise ValueError("OpenCV could not encode the overlay")
    return buf.tobytes()
