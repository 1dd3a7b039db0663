"""What the report shows about trusting the calls: the flagged cells and the heatmap overlays.

Flagged cells (a quality check failed, or the cell lies outside the calibration cells'
distribution; :mod:`edgeleuk.workflow.flags`) get their own section: how often each reason
occurred, a card per cell (thumbnail, overlay when there is one, the reasons, the OOD score and
the call or "withheld") and a table of every flagged row.

Overlays come from the folder ``predict --heatmaps DIR`` wrote, through its ``index.csv``
(:data:`~edgeleuk.workflow.heatmap_out.INDEX`). As with ``--images``, a file is read only below
that folder (a path that leaves it, by ``..``, an absolute path or a link, is refused) and only
up to :data:`MAX_OVERLAY_BYTES`.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.io.csvcells import plain_row, text_to_name
from edgeleuk.io.files import read_csv
from edgeleuk.workflow.heatmap_out import INDEX, INDEX_COLUMNS
from edgeleuk.workflow.report_data import Row, is_inside

#: Cards in the flagged section; every flagged row is still in its table.
N_FLAGGED_CARDS = 48
#: Rows of the flagged table (a page must stay small enough to mail).
N_FLAGGED_ROWS = 500
#: Largest overlay PNG read (one is a few hundred KB).
MAX_OVERLAY_BYTES = 8 * 1024 * 1024
#: Largest side of an overlay on the page, whatever the file holds.
MAX_OVERLAY_SIDE = 360


def overlay_uri(path: Path, scale: float, quality: int = 85) -> str | None:
    """A ``data:image/jpeg;base64,...`` copy of an overlay PNG shrunk by ``scale``, or None if unreadable."""
    try:
        if path.stat().st_size > MAX_OVERLAY_BYTES:
            return None
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return None
    scale = min(scale, MAX_OVERLAY_SIDE / max(img.shape[:2]))
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


class HeatmapFolder:
    """The overlays ``predict --heatmaps DIR`` wrote, by row path, read only below ``DIR``.

    Args:
        folder: The ``--heatmaps`` folder, or None (no overlays; nothing is said about them).
        scale: How much the page shrinks an overlay (the thumbnails' own, so the cells match).

    Raises:
        UsageError: ``folder`` is not a folder (exit 2).
    """

    def __init__(self, folder: Path | None, scale: float = 1.0) -> None:
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"--heatmaps {folder} is not a folder; give the folder predict --heatmaps wrote")
        self.folder = None if folder is None else Path(folder)
        self.scale = scale
        self.index: dict[str, str] = {}
        self.note = ""
        if self.folder is not None:
            self._read_index()

    def _read_index(self) -> None:
        assert self.folder is not None
        path = self.folder / INDEX
        if not path.is_file():
            self.note = (f"--heatmaps {self.folder} holds no {INDEX} (predict --heatmaps writes one): "
                         "no overlays shown")
            return
        try:
            if path.stat().st_size > MAX_OVERLAY_BYTES:
                raise UsageError(f"{path} is larger than {MAX_OVERLAY_BYTES} bytes")
            columns, raw = read_csv(path)
        except (OSError, DataError, UsageError) as exc:
            self.note = f"{path} cannot be read ({exc}): no overlays shown"
            return
        if list(columns) != list(INDEX_COLUMNS):
            self.note = f"{path} has columns {columns}, not {list(INDEX_COLUMNS)}: no overlays shown"
            return
        for r in (plain_row(r) for r in raw):
            self.index.setdefault(text_to_name(r.get("path") or ""), text_to_name(r.get("heatmap") or ""))

    def uri(self, row: Row) -> str | None:
        """The overlay of ``row`` as a data URI, or None (none written, refused or unreadable)."""
        if self.folder is None:
            return None
        name = self.index.get(row.path)
        if not name or not is_inside(name):
            return None
        try:
            real = (self.folder / name).resolve()
        except (OSError, RuntimeError):  # a link loop
            return None
        if self.folder.resolve() not in real.parents or not real.is_file():  # a link that leads out
            return None
        return overlay_uri(real, self.scale)


@dataclass
class Flagged:
    """The flagged section: reasons counted, cards, and the table of every flagged row.

    Attributes:
        rows: Every flagged row, withheld calls first, then by OOD score (highest first).
        reasons: Reason -> cells it flagged (a cell with two reasons counts for both).
        cards: The first :data:`N_FLAGGED_CARDS` rows' cards (thumbnails and overlays).
        checked: Whether any row says it was checked (files written before the qc column were not).
    """

    rows: list[Row] = field(default_factory=list)
    reasons: list[tuple[str, int]] = field(default_factory=list)
    cards: list = field(default_factory=list)
    checked: bool = False

    @property
    def withheld(self) -> int:
        return sum(r.withheld for r in self.rows)

    @property
    def table(self) -> list[Row]:
        return self.rows[:N_FLAGGED_ROWS]


def flagged_section(rows: list[Row], card) -> Flagged:
    """Gather the flagged rows; ``card(row)`` makes a row's card (thumbnail and overlay)."""
    flagged = sorted((r for r in rows if r.flagged),
                     key=lambda r: (not r.withheld, -(r.ood_score if r.ood_score is not None else -1.0)))
    counts = Counter(reason for r in flagged for reason in r.reasons)
    return Flagged(rows=flagged, reasons=sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
                   cards=[card(r) for r in flagged[:N_FLAGGED_CARDS]], checked=any(r.qc for r in rows))
