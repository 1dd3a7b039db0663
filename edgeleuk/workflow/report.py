"""``edgeleuk report``: a self-contained HTML page from a predictions CSV.

The page is made for the person at the microscope, who thinks in patients: a
per-subject table (cells, share called ALL, mean probability; true class and
accuracy when known, as in the paper's Figure 3), a histogram of probabilities
with the threshold, thumbnails of the surest ALL calls and of the least certain
calls, and every file that could not be classified. Images are inlined as
base64 JPEG and the histogram is inline SVG, so the file opens offline and can
be mailed or archived on its own. Data made by ``edgeleuk synth`` are flagged
SYNTHETIC; every page says it is not a diagnostic device.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from edgeleuk.core.errors import UsageError
from edgeleuk.evaluation.metrics import binary_metrics
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.workflow.report_data import (
    Row,
    ThresholdEstimate,
    estimate_threshold,
    find_synthetic_root,
    is_inside,
    load_rows,
    summarise_subjects,
)
from edgeleuk.workflow.report_html import Card, Page, histogram_svg, render_page, thumbnail_uri

N_THUMBS = 12


def _locate(path: str, bases: list[Path]) -> Path:
    """Where an image named in the CSV is: the first base folder holding it.

    ``predict`` writes paths relative to the folder it classified, which the CSV
    does not record; ``images`` (``--images``) names it, the current folder and
    the CSV's folder are tried after it. Paths that leave their folder never get
    here (:func:`edgeleuk.workflow.report_data.is_inside`).
    """
    p = Path(path)
    for base in bases:
        if (base / p).exists():
            return base / p
    return bases[0] / p


def _cards(rows: list[Row], bases: list[Path]) -> list[Card]:
    return [Card(r, thumbnail_uri(_locate(r.path, bases))) for r in rows]


def _overall_metrics(rows: list[Row]) -> dict | None:
    """Cell-level metrics of the calls when every classified cell has a true label and both classes occur."""
    ok = [r for r in rows if r.ok]
    if not ok or any(r.truth is None for r in ok) or len({r.truth for r in ok}) < 2:
        return None
    return binary_metrics([r.truth for r in ok], [int(bool(r.called_all)) for r in ok], threshold=0.5)


def _histogram(rows: list[Row], threshold: ThresholdEstimate) -> str:
    ok = [r for r in rows if r.ok]
    if ok and all(r.truth is not None for r in ok):
        groups = {"ALL": [r.prob for r in ok if r.truth == 1], "HEM": [r.prob for r in ok if r.truth == 0]}
    else:
        groups = {"cells": [r.prob for r in ok]}
    band = (
        (threshold.low, threshold.high) if threshold.low is not None and threshold.high is not None else None
    )
    return histogram_svg(groups, band, title=f"Probability of ALL, {len(ok)} cells")


def build_page(
    predictions: Path, images: Path | None = None, threshold: float | None = None, n_thumbs: int = N_THUMBS
) -> Page:
    """Read the predictions and gather everything the page shows (see :func:`write_report`)."""
    predictions = Path(predictions)
    rows = load_rows(predictions)
    if images is not None and not Path(images).is_dir():
        raise UsageError(f"--images {images} is not a folder; give the folder predict or watch classified")
    bases = ([Path(images)] if images is not None else []) + [Path.cwd(), predictions.resolve().parent]
    est = estimate_threshold(rows, threshold)
    ok = [r for r in rows if r.ok]
    confident = sorted((r for r in ok if r.called_all), key=lambda r: -r.prob)[:n_thumbs]
    centre = est.centre if est.centre is not None else 0.5
    borderline = sorted(ok, key=lambda r: abs(r.prob - centre))[:n_thumbs]
    borderline.sort(key=lambda r: r.prob)
    located = [_locate(r.path, bases) for r in rows if is_inside(r.path)]
    found = [p for p in located if p.exists()]
    return Page(
        source=predictions,
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        rows=rows,
        subjects=summarise_subjects(rows),
        threshold_note=est.describe(),
        histogram_svg=_histogram(rows, est),
        synthetic_root=find_synthetic_root(found, near=None if found else predictions.resolve().parent),
        images_missing=not found,
        overall=_overall_metrics(rows),
        confident=_cards(confident, bases),
        borderline=_cards(borderline, bases),
    )


def write_report(
    predictions: Path,
    out: Path = Path("report.html"),
    images: Path | None = None,
    threshold: float | None = None,
) -> Path:
    """Write the HTML report for a predictions CSV.

    Args:
        predictions: CSV written by ``edgeleuk predict`` or ``edgeleuk watch``.
        out: HTML file to write (atomically).
        images: Folder the CSV's relative paths start from (the folder predict or watch was
            given); None tries the current folder, then the CSV's folder.
        threshold: Decision threshold to mark; None reads it from the calls in the file.

    Returns:
        ``out``.

    Raises:
        UsageError: The CSV is missing or is not a predictions file, or ``images`` is not a folder.
        DataError: The CSV holds no rows.
    """
    out = Path(out)
    atomic_write_text(out, render_page(build_page(predictions, images, threshold)))
    return out
