"""The report's view of smear fields (rows of ``predict/watch --fields``): a line per field, by subject.

A field's line: its subject, the white cells classified and how many were called ALL, the mean
probability, the objects not classified (red cells, platelets, debris, cells cut by the edge,
from ``<csv>.fields.json`` when it is there) and the field's error, if it gave no cells.
A cell's thumbnail is cut from its field at the row's bounding box (the field read only below
``--images``, with the bounded field decoder).
"""

from __future__ import annotations

import base64
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from edgeleuk import fields as fieldlib
from edgeleuk.io.csvcells import name_to_text
from edgeleuk.io.files import natural_key
from edgeleuk.workflow.report_data import UNKNOWN_SUBJECT, Row

#: Pixels of field kept around a cell's box in its thumbnail, as a share of the box's side.
MARGIN = 0.15


@dataclass(frozen=True)
class FieldSummary:
    """One field's line in the report.

    Attributes:
        field: The field file, as the rows name it (exact; shown with :func:`name_to_text`).
        subject: Its subject, or :data:`UNKNOWN_SUBJECT`.
        cells: White cells classified. called_all: Of those, called ALL.
        mean_prob: Their mean probability of ALL (NaN without cells).
        excluded: Objects not classified, by kind (empty when the fields record is missing).
        error: Why the field gave no cells, or "".
    """

    field: str
    subject: str
    cells: int
    called_all: int
    mean_prob: float
    excluded: Mapping[str, int]
    error: str = ""

    @property
    def shown(self) -> str:
        return name_to_text(self.field)

    @property
    def share_all(self) -> float:
        return self.called_all / self.cells if self.cells else math.nan

    @property
    def excluded_text(self) -> str:
        """``2 platelet, 31 red cell``; a dash when nothing is known."""
        found = [f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(self.excluded.items()) if n]
        return ", ".join(found) or ("none" if self.excluded else "–")


def summarise_fields(rows: list[Row], record: Mapping[str, Mapping[str, Any]] | None = None) -> list[FieldSummary]:
    """One line per field the rows name, sorted by subject then field (natural order); [] for plain rows.

    Args:
        rows: The report's rows.
        record: ``<csv>.fields.json``'s fields (field as shown -> entry), for the excluded counts.
    """
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.field is not None:
            groups[r.field].append(r)
    out = []
    for name, mine in groups.items():
        good = [r for r in mine if r.ok]
        subject = next((r.subject for r in mine if r.subject), None) or UNKNOWN_SUBJECT
        entry = (record or {}).get(name_to_text(name)) or {}
        excluded = {str(k): int(v) for k, v in (entry.get("excluded") or {}).items() if isinstance(v, int)}
        out.append(FieldSummary(
            field=name, subject=subject, cells=len(good), called_all=sum(bool(r.called_all) for r in good),
            mean_prob=sum(r.prob for r in good) / len(good) if good else math.nan, excluded=excluded,
            error="" if good else next((r.error or "" for r in mine if not r.ok), ""),
        ))
    return sorted(out, key=lambda f: (f.subject == UNKNOWN_SUBJECT, natural_key(f.subject), natural_key(f.shown)))


def cell_thumbnail_uri(field: Path, bbox: tuple[int, int, int, int], size: int, quality: int = 85) -> str | None:
    """A ``data:`` JPEG of one cell cut from its field around ``bbox``; None when the field cannot be read."""
    try:
        rgb = fieldlib.read_field(field).rgb
    except fieldlib.FieldError:
        return None
    x0, y0, x1, y1 = bbox
    pad = int(MARGIN * max(x1 - x0, y1 - y0))
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    if x1 <= x0 or y1 <= y0:  # a box outside the field: a CSV edited or made for another field
        return None
    cut = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2BGR)
    scale = size / max(cut.shape[:2])
    small = cv2.resize(cut, (max(1, round(cut.shape[1] * scale)), max(1, round(cut.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else None
