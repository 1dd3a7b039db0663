"""Render the report as one self-contained HTML page (inline CSS, SVG and images; no network).

The probability histogram is drawn as inline SVG (no plotting library): bars are
stacked by true class when labels are known (ALL red, HEM blue), otherwise grey;
the decision threshold is a dashed vertical line, or a shaded band when only its
bracket is known (the highest HEM and the lowest ALL call). Thumbnails are small
JPEGs inlined as ``data:`` URIs, so the page needs no other file.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.meta import Preprocess
from edgeleuk.io.csvcells import name_to_text
from edgeleuk.io.imageio import decode_image
from edgeleuk.workflow.report_data import Row, SubjectSummary

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; font-size: 13px; }
.banner { padding: 10px 14px; border-radius: 6px; margin: 12px 0; font-size: 14px; }
.synthetic { background: #fff3cd; border: 2px solid #e0a800; font-weight: 600; }
.notice { background: #eef3f8; border: 1px solid #b8c9dc; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.bar { display: block; height: 10px; background: #c0392b; }
.barbg { display: inline-block; width: 80px; height: 10px; background: #e8e8e8; margin-right: 6px;
         vertical-align: middle; }
.hist text { font-size: 11px; fill: #333; } .hist .svg-title { font-size: 13px; font-weight: 600; }
.hist .grid { stroke: #eee; } .hist .axis { stroke: #888; }
.hist .threshold { stroke: #111; stroke-width: 1.5; stroke-dasharray: 5 3; }
.hist .threshold-label { font-weight: 600; } .hist .threshold-band { fill: #000; fill-opacity: 0.08; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 8px; }
.card { width: 124px; font-size: 11px; text-align: center; border: 1px solid #ddd; border-radius: 4px;
        padding: 5px; background: #fafafa; }
.card img, .card .noimg { width: 112px; height: 112px; display: block; margin: 0 auto 3px; }
.card .noimg { background: #eee; color: #888; line-height: 112px; }
.card .name { color: #666; overflow-wrap: anywhere; }
.all { color: #c0392b; font-weight: 600; } .hem { color: #2e6da4; font-weight: 600; }
.wrong { background: #fdecea; }
.stats td { text-align: left; } .small { font-size: 12px; color: #666; }
"""

NOT_DIAGNOSTIC = (
    "Research software, not a diagnostic device: these are per-cell model outputs, not a diagnosis. "
    "A qualified person must review every smear; do not base clinical decisions on this page."
)


@dataclass(frozen=True)
class Card:
    """A thumbnail with its caption."""

    row: Row
    uri: str | None


@dataclass
class Page:
    """Everything the page shows; built by :mod:`edgeleuk.workflow.report`."""

    source: Path
    generated: str
    rows: list[Row]
    subjects: list[SubjectSummary]
    threshold_note: str
    histogram_svg: str
    synthetic_root: Path | None = None
    images_missing: bool = False
    overall: dict | None = None
    confident: list[Card] = field(default_factory=list)
    borderline: list[Card] = field(default_factory=list)


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _cls(truth: int | None) -> str:
    return (
        "–"
        if truth is None
        else ('<span class="all">ALL</span>' if truth else '<span class="hem">HEM</span>')
    )


def _subject_table(subjects: list[SubjectSummary]) -> str:
    with_truth = any(s.truth is not None for s in subjects)
    head = ["subject", "cells", "errors", "called ALL", "share ALL", "mean prob."]
    if with_truth:
        head += ["true class", "accuracy"]
    lines = [
        "<table><tr>" + "".join(f'<th class="{"l" if i == 0 else ""}">{h}</th>' for i, h in enumerate(head))
    ]
    for s in subjects:
        share = s.share_all
        bar = (
            ""
            if math.isnan(share)
            else (f'<span class="barbg"><span class="bar" style="width:{80 * share:.0f}px"></span></span>')
        )
        cells = [
            f'<td class="l">{escape(s.subject)}</td>',
            f"<td>{s.cells}</td>",
            f"<td>{s.errors or ''}</td>",
            f"<td>{s.called_all}</td>",
            f"<td>{bar}{_pct(share)}</td>",
            f"<td>{'–' if math.isnan(s.mean_prob) else f'{s.mean_prob:.3f}'}</td>",
        ]
        wrong = ""
        if with_truth:
            cells += [f"<td>{_cls(s.truth)}</td>", f"<td>{_pct(s.accuracy)}</td>"]
            wrong = ' class="wrong"' if s.accuracy is not None and s.accuracy < 0.5 else ""
        lines.append(f"<tr{wrong}>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    if any(s.accuracy is not None and s.accuracy < 0.5 for s in subjects):
        lines.append('<p class="small">Rows in red: most of the subject\'s cells were called wrongly.</p>')
    return "\n".join(lines)


def _card(card: Card) -> str:
    r = card.row
    img = (
        f'<img src="{card.uri}" alt="{escape(Path(r.shown).name)}">'
        if card.uri
        else '<div class="noimg">image not found</div>'
    )
    call = '<span class="all">ALL</span>' if r.called_all else '<span class="hem">HEM</span>'
    truth = "" if r.truth is None else f"<br>true class {'ALL' if r.truth else 'HEM'}"
    return (
        f'<div class="card">{img}{call} p={r.prob:.3f}{truth}<br>'
        f'<span class="name">{escape(r.subject or "")} {escape(Path(r.shown).name)}</span></div>'
    )


def _cards(title: str, explain: str, cards: list[Card], empty: str) -> str:
    if not cards:
        return f"<h2>{title}</h2><p class='small'>{empty}</p>"
    return (
        f"<h2>{title}</h2><p class='small'>{explain}</p><div class='cards'>"
        + "".join(_card(c) for c in cards)
        + "</div>"
    )


def _errors(rows: list[Row]) -> str:
    bad = [r for r in rows if not r.ok]
    if not bad:
        return "<h2>Files not classified</h2><p class='small'>None: every file was classified.</p>"
    lines = [
        f"<h2>Files not classified ({len(bad)})</h2>",
        '<table><tr><th class="l">file</th><th class="l">reason</th></tr>',
    ]
    lines += [
        f'<tr><td class="l">{escape(r.shown)}</td><td class="l">{escape(r.error or "")}</td></tr>'
        for r in bad
    ]
    lines.append("</table>")
    return "\n".join(lines)


def _overall(page: Page) -> str:
    ok = [r for r in page.rows if r.ok]
    n_all = sum(bool(r.called_all) for r in ok)
    items = [
        ("cells classified", f"{len(ok)} of {len(page.rows)}"),
        ("called ALL", f"{n_all} ({_pct(n_all / len(ok) if ok else None)})"),
        ("subjects", str(len(page.subjects))),
        ("threshold", page.threshold_note),
    ]
    m = page.overall
    if m:
        items += [
            ("cell accuracy (true labels known)", _pct(m["accuracy"])),
            ("sensitivity / specificity", f"{_pct(m['sensitivity'])} / {_pct(m['specificity'])}"),
            ("weighted F1", f"{m['f1']:.4f}"),
        ]
    body = "".join(f'<tr><th class="l">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in items)
    return f'<table class="stats">{body}</table>'


def _missing_images_note(page: Page) -> str:
    if not page.images_missing:
        return ""
    return (
        '<div class="banner synthetic">None of the images named in this file were found, so there are no '
        "thumbnails. The paths are relative to the folder that was classified: rerun with "
        "<code>edgeleuk report CSV --images FOLDER</code>.</div>"
    )


def _shown(path: Path) -> str:
    """A path relative to the current folder when it lies below it (shorter, and no user names)."""
    try:
        return name_to_text(str(path.relative_to(Path.cwd())))
    except ValueError:
        return name_to_text(str(path))


def render_page(page: Page) -> str:
    """The whole HTML document as text."""
    synthetic = ""
    if page.synthetic_root is not None:
        synthetic = (
            '<div class="banner synthetic">SYNTHETIC DATA: these images were drawn by '
            "<code>edgeleuk synth</code> "
            f"({escape(_shown(page.synthetic_root))}). Every number and picture below only shows that the "
            "pipeline works; it says nothing about leukaemia diagnosis.</div>"
        )
    title = "edgeleuk report" + (" (SYNTHETIC data)" if synthetic else "")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f'<div class="meta">{escape(_shown(page.source))} · generated {escape(page.generated)}</div>',
            synthetic,
            f'<div class="banner notice">{escape(NOT_DIAGNOSTIC)}</div>',
            _missing_images_note(page),
            "<h2>Summary</h2>",
            _overall(page),
            "<h2>Subjects</h2>",
            _subject_table(page.subjects),
            "<h2>Probabilities</h2>",
            page.histogram_svg,
            _cards(
                "Most confident ALL calls",
                "The cells the model is surest are ALL blasts.",
                page.confident,
                "No cell was called ALL.",
            ),
            _cards(
                "Closest to the threshold",
                "The least certain calls: review these first.",
                page.borderline,
                "No cell was classified.",
            ),
            _errors(page.rows),
            f'<p class="small">{escape(NOT_DIAGNOSTIC)}</p>',
            "</body></html>",
        ]
    )


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
) -> str:
    """Draw stacked histograms of probabilities in [0, 1].

    Args:
        groups: Series name (``ALL``, ``HEM`` or ``cells``) to probabilities; stacked in this order.
        threshold: ``(low, high)`` bracket of the decision threshold (equal when known exactly), or None.
        bins: Number of equal-width bins on [0, 1].
        title: Caption drawn above the plot.

    Returns:
        An ``<svg>`` element as text.
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

    parts = [
        (
            f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{escape(title or "histogram")}" class="hist">'
        ),
        f'<text x="{LEFT}" y="16" class="svg-title">{escape(title)}</text>',
    ]
    for t in ticks:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t}</text>')
    for v in np.linspace(0, 1, 11):
        parts.append(f'<text x="{x(v):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{v:.1f}</text>')
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">probability of ALL</text>'
    )
    parts += _bars(counts, edges, x, y)
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}" class="axis"/>')
    if threshold is not None:
        parts += _threshold_marks(*threshold, x, y)
    parts += _legend(list(counts))
    parts.append("</svg>")
    return "\n".join(parts)


def _threshold_marks(low: float, high: float, x, y) -> list[str]:
    low, high = (float(np.clip(v, 0.0, 1.0)) for v in (low, high))
    x0, x1 = x(low), x(high)
    top, bottom = TOP - 10, y(0)
    parts = []
    if x1 - x0 >= 1.0:
        parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{bottom - top:.1f}" '
            'class="threshold-band"/>'
        )
        text = f"threshold {low:.3f}–{high:.3f}"
    else:
        text = f"threshold {high:.3f}"
    for xv in {x0, x1}:
        parts.append(f'<line x1="{xv:.1f}" x2="{xv:.1f}" y1="{top}" y2="{bottom:.1f}" class="threshold"/>')
    right = high > 0.7  # keep the label inside the plot
    tx, anchor = (x0 - 4, "end") if right else (x1 + 4, "start")
    parts.append(
        f'<text x="{tx:.1f}" y="{TOP - 4}" text-anchor="{anchor}" class="threshold-label">{text}</text>'
    )
    return parts


def _bars(counts: dict[str, np.ndarray], edges: np.ndarray, x, y) -> list[str]:
    parts = []
    base = np.zeros(len(edges) - 1)
    for name, c in counts.items():
        for i, n in enumerate(c):
            if n == 0:
                continue
            x0, x1 = x(edges[i]) + 0.5, x(edges[i + 1]) - 0.5
            y0, y1 = y(base[i] + n), y(base[i])
            parts.append(
                f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" '
                f'fill="{COLOURS.get(name, COLOURS["cells"])}"><title>{escape(name)}: {n} cells, '
                f"p in [{edges[i]:.2f}, {edges[i + 1]:.2f})</title></rect>"
            )
        base += c
    return parts


def _legend(names: list[str]) -> list[str]:
    parts = []
    for i, name in enumerate(names):
        lx = WIDTH - RIGHT - 110 * (len(names) - i)
        parts.append(
            f'<rect x="{lx}" y="6" width="12" height="12" fill="{COLOURS.get(name, COLOURS["cells"])}"/>'
        )
        label = f"true {name}" if name in ("ALL", "HEM") else name
        parts.append(f'<text x="{lx + 16}" y="16">{escape(label)}</text>')
    return parts


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
