"""A probability histogram drawn as inline SVG (no plotting library, no network).

Bars are stacked by true class when labels are known (ALL red, HEM blue),
otherwise grey; the decision threshold is a dashed vertical line, or a shaded
band when only its bracket is known (the highest HEM and the lowest ALL call).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

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
