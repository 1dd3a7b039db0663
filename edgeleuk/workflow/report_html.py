"""Render the report as one self-contained HTML page (inline CSS, SVG and images; no network).

The page is the Jinja2 template ``templates/report.html.j2``, autoescaped: every path,
subject, error and model name from the CSV or its sidecar is inserted as text. The
probability histogram is inline SVG (``templates/histogram.svg.j2``, no plotting
library): bars are stacked by true class when labels are known (ALL red, HEM blue),
otherwise grey; the decision threshold is a dashed vertical line, or a shaded band
when only its bracket is known (the highest HEM and the lowest ALL call). Thumbnails
are small JPEGs inlined as ``data:`` URIs, so the page needs no other file.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from markupsafe import Markup

from edgeleuk import __version__
from edgeleuk.core.meta import Preprocess
from edgeleuk.io.csvcells import name_to_text
from edgeleuk.io.imageio import decode_image
from edgeleuk.workflow.render import render
from edgeleuk.workflow.report_data import ModelSummary, Provenance, Row, SubjectSummary
from edgeleuk.workflow.report_fields import FieldSummary
from edgeleuk.workflow.report_trust import Flagged

NOT_DIAGNOSTIC = (
    "Research software, not a diagnostic device: these are per-cell model outputs, not a diagnosis. "
    "A qualified person must review every smear; do not base clinical decisions on this page."
)


@dataclass(frozen=True)
class Card:
    """A thumbnail with its caption.

    Attributes:
        row: The call shown.
        uri: ``data:`` URI of the thumbnail, or None.
        missing: Why there is no thumbnail (shown in its place), or "" when none is expected.
        heatmap: ``data:`` URI of the cell's heatmap overlay (``report --heatmaps``), or None.
    """

    row: Row
    uri: str | None
    missing: str = ""
    heatmap: str | None = None


@dataclass
class Group:
    """The figures of the calls one model made at one threshold (the whole file when it holds one).

    Attributes:
        title: Heading when the file mixes models ("" otherwise).
        rows: Its rows.
        subjects: Per-subject summaries.
        threshold_note: The threshold as stated.
        histogram_svg: Inline SVG.
        overall: Cell-level metrics when true labels are known.
        confident: Surest ALL calls. borderline: Calls closest to the threshold.
        fields: Per smear field, by subject (rows of ``--fields``; empty otherwise).
    """

    title: str
    rows: list[Row]
    subjects: list[SubjectSummary]
    threshold_note: str
    histogram_svg: Markup
    overall: dict | None = None
    confident: list[Card] = field(default_factory=list)
    borderline: list[Card] = field(default_factory=list)
    fields: list[FieldSummary] = field(default_factory=list)

    @property
    def stats(self) -> list[tuple[str, str]]:
        """The summary table's lines."""
        ok = [r for r in self.rows if r.ok]
        n_all = sum(bool(r.called_all) for r in ok)
        items = [
            ("cells classified", f"{len(ok)} of {len(self.rows)}"),
            ("called ALL", f"{n_all} ({pct(n_all / len(ok) if ok else None)})"),
            ("subjects", str(len(self.subjects))),
            *((("smear fields", str(len(self.fields))),) if self.fields else ()),
            ("threshold", self.threshold_note),
        ]
        flagged = [r for r in self.rows if r.flagged]
        if flagged:
            held = sum(r.withheld for r in flagged)
            items.append(("flagged cells", f"{len(flagged)}" + (
                f": {held} without a label (--qc strict), left out of the figures above" if held
                else ": labels kept (--qc flag), counted above")))
        m = self.overall
        if m:
            items += [
                ("cell accuracy (true labels known)", pct(m["accuracy"])),
                ("sensitivity / specificity", f"{pct(m['sensitivity'])} / {pct(m['specificity'])}"),
                ("weighted F1", f"{m['f1']:.4f}"),
            ]
        return items


@dataclass
class Page:
    """Everything the page shows; built by :mod:`edgeleuk.workflow.report`.

    Attributes:
        source: The predictions file.
        generated: When the page was made.
        rows: Every row of the file.
        groups: Figures per model and threshold (one group for a file of one model).
        models: The models the rows name, for the header.
        provenance: The sidecar as read.
        card_summary: The model card's summary lines (``report --model``), or empty.
        synthetic_root: Where ``edgeleuk synth``'s marker was found, if anywhere.
        images_note: Why thumbnails are missing ("" when every image was found).
        warnings: Lines for a warning banner (model given does not match, damaged sidecar...).
        flagged: The flagged cells' section (:mod:`edgeleuk.workflow.report_trust`).
    """

    source: Path
    generated: str
    rows: list[Row]
    groups: list[Group]
    models: list[ModelSummary] = field(default_factory=list)
    provenance: Provenance = field(default_factory=Provenance)
    card_summary: list[tuple[str, str]] = field(default_factory=list)
    synthetic_root: Path | None = None
    images_note: str = ""
    warnings: list[str] = field(default_factory=list)
    flagged: Flagged = field(default_factory=Flagged)
    version: str = __version__

    @property
    def mixed(self) -> bool:
        """More than one model, or one model at more than one threshold, made the calls."""
        return len(self.groups) > 1

    @property
    def confident(self) -> list[Card]:
        return [c for g in self.groups for c in g.confident]

    @property
    def borderline(self) -> list[Card]:
        return [c for g in self.groups for c in g.borderline]

    @property
    def errors(self) -> list[Row]:
        return [r for r in self.rows if r.failed]


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal; a dash when undefined."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def shown_path(path: Path) -> str:
    """A path relative to the current folder when it lies below it (shorter, and no user names)."""
    try:
        return name_to_text(str(path.relative_to(Path.cwd())))
    except ValueError:
        return name_to_text(str(path))


def render_page(page: Page) -> str:
    """The whole HTML document as text."""
    return render("report.html.j2", page=page, not_diagnostic=NOT_DIAGNOSTIC, pct=pct, shown_path=shown_path,
                  isnan=math.isnan, Path=Path)


# --- histogram (inline SVG) ------------------------------------------------------------------

WIDTH, HEIGHT = 640, 276
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 44, 40
COLOURS = {"ALL": "#c0392b", "HEM": "#2e6da4", "cells": "#7f8c8d"}


def _y_ticks(top: int) -> list[int]:
    """About five round tick values from 0 to at least ``top``."""
    step = max(1, int(np.ceil(top / 5)))
    magnitude = 10 ** int(np.floor(np.log10(step)))
    for nice in (1, 2, 5, 10):
        if nice * magnitude >= step:
            step = nice * magnitude
            break
    return list(range(0, top + step, step))


def histogram_svg(
    groups: dict[str, Sequence[float]],
    threshold: tuple[float, float] | None,
    bins: int = 20,
    title: str = "",
) -> Markup:
    """Draw stacked histograms of probabilities in [0, 1].

    Args:
        groups: Series name (``ALL``, ``HEM`` or ``cells``) to probabilities; stacked in this order.
        threshold: ``(low, high)`` bracket of the decision threshold (equal when known exactly), or None.
        bins: Number of equal-width bins on [0, 1].
        title: Caption drawn above the plot.

    Returns:
        An ``<svg>`` element, rendered from ``histogram.svg.j2`` (autoescaped).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = {name: np.histogram(np.clip(np.asarray(v, float), 0, 1), edges)[0] for name, v in groups.items()}
    totals = sum(counts.values()) if counts else np.zeros(bins, int)
    ticks = _y_ticks(max(1, int(np.max(totals, initial=0))))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(v: float) -> float:
        return LEFT + v * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / ticks[-1] * plot_h

    svg = render(
        "histogram.svg.j2", title=title, width=WIDTH, height=HEIGHT, left=LEFT, right=RIGHT, top=TOP,
        plot_w=plot_w, plot_h=plot_h, y_ticks=[(t, y(t)) for t in ticks],
        x_ticks=[(v, x(v)) for v in np.linspace(0, 1, 11)], bars=_bars(counts, edges, x, y), y0=y(0),
        threshold=None if threshold is None else _threshold_marks(*threshold, x, y),
        legend=_legend(list(counts)),
    )
    return Markup(svg)


def _threshold_marks(low: float, high: float, x, y) -> dict:
    """Where the threshold line(s), band and label go."""
    low, high = (float(np.clip(v, 0.0, 1.0)) for v in (low, high))
    x0, x1 = x(low), x(high)
    band = x1 - x0 >= 1.0
    right = high > 0.7  # keep the label inside the plot
    return {
        "top": TOP - 10, "bottom": y(0), "band": (x0, x1 - x0) if band else None, "lines": sorted({x0, x1}),
        "text": f"threshold {low:.3f}–{high:.3f}" if band else f"threshold {high:.3f}",
        "tx": x0 - 4 if right else x1 + 4, "anchor": "end" if right else "start", "ty": TOP - 4,
    }


def _bars(counts: dict[str, np.ndarray], edges: np.ndarray, x, y) -> list[dict]:
    bars = []
    base = np.zeros(len(edges) - 1)
    for name, c in counts.items():
        for i, n in enumerate(c):
            if n == 0:
                continue
            x0, x1 = x(edges[i]) + 0.5, x(edges[i + 1]) - 0.5
            y0, y1 = y(base[i] + n), y(base[i])
            bars.append({"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "fill": COLOURS.get(name, COLOURS["cells"]),
                         "tip": f"{name}: {n} cells, p in [{edges[i]:.2f}, {edges[i + 1]:.2f})"})
        base += c
    return bars


def _legend(names: list[str]) -> list[dict]:
    return [{"x": WIDTH - RIGHT - 110 * (len(names) - i), "fill": COLOURS.get(name, COLOURS["cells"]),
             "label": f"true {name}" if name in ("ALL", "HEM") else name} for i, name in enumerate(names)]


# --- thumbnails ------------------------------------------------------------------------------

THUMB_SIZE = 112
DEFAULT_CROP = Preprocess().crop  # the paper's crop; the CSV does not say which model wrote it


def thumbnail_uri(
    path: str | Path, size: int = THUMB_SIZE, crop: int | None = DEFAULT_CROP, quality: int = 85
) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of an image file, or None if it cannot be read.

    The image goes through the same decoder as prediction and is cut to the
    centre crop the network sees, so the thumbnail shows what the model was given.
    """
    decoded = decode_image(Path(path))
    if not decoded.ok:
        return None
    img = decoded.image
    if crop is not None and crop < min(img.shape[:2]):
        top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
        img = img[top : top + crop, left : left + crop]
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    small = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
