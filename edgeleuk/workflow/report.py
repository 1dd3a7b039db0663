"""``edgeleuk report``: a self-contained HTML page from a predictions CSV.

The page is made for the person at the microscope, who thinks in patients: a
per-subject table (cells, share called ALL, mean probability; true class and
accuracy when known, as in the paper's Figure 3), a histogram of probabilities
with the threshold, thumbnails of the surest ALL calls and of the least certain
calls, the cells a quality or distribution check flagged (their own section, with reasons,
OOD score and, given ``--heatmaps``, the overlays ``predict --heatmaps`` wrote next to each
thumbnail; :mod:`edgeleuk.workflow.report_trust`), and every file that could not be classified.
Its header names the model(s)
that made the calls (id, file, threshold, calibration with its intervals, gate),
from the rows and the ``<csv>.provenance.json`` sidecar; with ``--model`` it embeds
that model's card summary. A file holding calls of more than one model (or one
model at more than one threshold) gets a banner and its figures split by model.

Images are read only below ``--images`` (a path that leaves it, by ``..``, an
absolute path or a link, is refused); without ``--images`` the page and stderr say
that there are no thumbnails. Images are inlined as base64 JPEG and the histogram is
inline SVG, so the file opens offline and can be mailed or archived on its own.
Data made by ``edgeleuk synth`` are flagged SYNTHETIC; every page says it is not a
diagnostic device.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from edgeleuk.core.errors import UsageError
from edgeleuk.evaluation.metrics import binary_metrics
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.workflow.fieldrows import FieldLedger
from edgeleuk.workflow.report_data import (
    UNKNOWN_MODEL,
    Row,
    ThresholdEstimate,
    estimate_threshold,
    find_synthetic_root,
    is_inside,
    load_rows,
    read_provenance,
    summarise_models,
    summarise_subjects,
)
from edgeleuk.workflow.report_fields import cell_thumbnail_uri, summarise_fields
from edgeleuk.workflow.report_html import (
    DEFAULT_CROP,
    THUMB_SIZE,
    Card,
    Group,
    Page,
    histogram_svg,
    render_page,
    thumbnail_uri,
)
from edgeleuk.workflow.report_trust import HeatmapFolder, flagged_section

log = logging.getLogger(__name__)
N_THUMBS = 12
NO_IMAGES = (
    "No --images folder given, so this page has no thumbnails. The paths in the file are relative to the "
    "folder predict or watch classified: rerun with edgeleuk report CSV --images FOLDER."
)


class ImageFolder:
    """Finds the images a CSV names, only below ``--images`` (no other folder is ever tried)."""

    def __init__(self, images: Path | None) -> None:
        if images is not None and not Path(images).is_dir():
            raise UsageError(f"--images {images} is not a folder; give the folder predict or watch classified")
        self.images = None if images is None else Path(images)
        self.root = None if images is None else Path(images).resolve()

    def locate(self, path: str) -> tuple[Path | None, str]:
        """The image file for a row's path, or None and why not ("" when no folder was given)."""
        if self.images is None or self.root is None:
            return None, ""
        if not is_inside(path):
            return None, "refused: outside --images"
        try:
            real = (self.images / path).resolve()
        except (OSError, RuntimeError):  # a link loop
            return None, "image not readable"
        if self.root not in real.parents:  # a link that leads out of the folder
            return None, "refused: link leaves --images"
        return (real, "") if real.is_file() else (None, "image not found")

    def card(self, row: Row) -> Card:
        """The row's thumbnail, or what stands in its place."""
        found, why = self.locate(row.path)
        if found is None:
            return Card(row, None, why)
        # A cell of a smear field: cut from the field at its box, not the whole field.
        uri = cell_thumbnail_uri(found, row.bbox, THUMB_SIZE) if row.bbox else thumbnail_uri(found)
        return Card(row, uri, "" if uri else "image not readable")

    def note(self, rows: list[Row]) -> tuple[str, list[Path]]:
        """What the page says about missing images, and the image files found."""
        if self.images is None:
            return NO_IMAGES, []
        named = list(dict.fromkeys(r.path for r in rows if is_inside(r.path)))  # a field's cells name it once
        found = [p for p in (self.locate(n)[0] for n in named) if p is not None]
        if named and not found:
            return (f"None of the {len(named)} images named in this file were found below --images {self.images}: "
                    "give the folder predict or watch classified (their summary names it)."), found
        if len(found) < len(named):
            return f"{len(named) - len(found)} of {len(named)} images named in this file were not found.", found
        return "", found


def _overall_metrics(rows: list[Row]) -> dict | None:
    """Cell-level metrics of the calls when every classified cell has a true label and both classes occur."""
    ok = [r for r in rows if r.ok]
    if not ok or any(r.truth is None for r in ok) or len({r.truth for r in ok}) < 2:
        return None
    return binary_metrics([r.truth for r in ok], [int(bool(r.called_all)) for r in ok], threshold=0.5)


def _histogram(rows: list[Row], threshold: ThresholdEstimate):
    ok = [r for r in rows if r.ok]
    if ok and all(r.truth is not None for r in ok):
        groups = {"ALL": [r.prob for r in ok if r.truth == 1], "HEM": [r.prob for r in ok if r.truth == 0]}
    else:
        groups = {"cells": [r.prob for r in ok]}
    band = (
        (threshold.low, threshold.high) if threshold.low is not None and threshold.high is not None else None
    )
    return histogram_svg(groups, band, title=f"Probability of ALL, {len(ok)} cells")


def _split(rows: list[Row]) -> list[tuple[tuple[str | None, float | None], list[Row]]]:
    """Rows by the (model, threshold) of the calls, in order of first appearance.

    The groups come from classified rows: a row that failed joins the group of its model and
    threshold when there is one (an error row that names neither starts no group of its own).
    """
    groups: dict[tuple[str | None, float | None], list[Row]] = {}
    for r in rows:
        if r.ok:
            groups.setdefault((r.model, r.threshold), [])
    if not groups:
        return [((None, None), rows)]
    for r in rows:
        if (r.model, r.threshold) in groups:
            groups[(r.model, r.threshold)].append(r)
    return list(groups.items())


def _group(key: tuple[str | None, float | None], rows: list[Row], given: float | None,
           card: Callable[[Row], Card], n_thumbs: int, fields: dict | None = None) -> Group:
    model, threshold = key
    if given is None and threshold is not None:
        est = ThresholdEstimate(threshold, threshold, given=True)  # the rows say which threshold made them
    else:
        est = estimate_threshold(rows, given)
    ok = [r for r in rows if r.ok]
    confident = sorted((r for r in ok if r.called_all), key=lambda r: -r.prob)[:n_thumbs]
    centre = est.centre if est.centre is not None else 0.5
    borderline = sorted(ok, key=lambda r: abs(r.prob - centre))[:n_thumbs]
    borderline.sort(key=lambda r: r.prob)
    at = f"threshold {threshold:g}" if threshold is not None else "threshold not recorded"
    return Group(
        title=f"model {model or UNKNOWN_MODEL} at {at}", rows=rows, subjects=summarise_subjects(rows),
        threshold_note=est.describe(), histogram_svg=_histogram(rows, est), overall=_overall_metrics(rows),
        confident=[card(r) for r in confident], borderline=[card(r) for r in borderline],
        fields=summarise_fields(rows, fields),
    )


def _card_summary(model: Path | None, page_models: list, warnings: list[str]) -> list[tuple[str, str]]:
    """The model card's summary for ``--model``; a warning when that model made none of the rows."""
    if model is None:
        return []
    from edgeleuk.workflow.card import build_card  # only with --model: it hashes and reads the model

    card = build_card(model)
    named = [m.model_id for m in page_models if m.model_id]
    if named and card.model_id not in named:
        warnings.append(f"--model {Path(model).name} (id {card.model_id}) made none of the rows in this file "
                        f"(they name {', '.join(named)}); its card summary below describes another model.")
    return card.summary()


def build_page(
    predictions: Path, images: Path | None = None, threshold: float | None = None, n_thumbs: int = N_THUMBS,
    model: Path | None = None, heatmaps: Path | None = None,
) -> Page:
    """Read the predictions and gather everything the page shows (see :func:`write_report`)."""
    predictions = Path(predictions)
    rows = load_rows(predictions)
    folder = ImageFolder(images)
    overlays = HeatmapFolder(heatmaps, scale=THUMB_SIZE / DEFAULT_CROP)  # cells at the thumbnails' scale

    def card(row: Row) -> Card:
        return dataclasses.replace(folder.card(row), heatmap=overlays.uri(row))

    provenance = read_provenance(predictions)
    ledger = FieldLedger.read(predictions)  # rows of --fields: what each field held
    fields = ledger.fields if ledger is not None else None
    models = summarise_models(rows, provenance)
    warnings = [provenance.problem] if provenance.problem else []
    if overlays.note:
        warnings.append(overlays.note)
    note, found = folder.note(rows)
    if note:
        log.warning("%s", note)
    return Page(
        source=predictions,
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        rows=rows,
        groups=[_group(key, mine, threshold, card, n_thumbs, fields) for key, mine in _split(rows)],
        flagged=flagged_section(rows, card),
        models=models,
        provenance=provenance,
        card_summary=_card_summary(model, models, warnings),
        synthetic_root=find_synthetic_root(found, near=None if found else predictions.resolve().parent),
        images_note=note,
        warnings=warnings,
    )


def write_report(
    predictions: Path,
    out: Path = Path("report.html"),
    images: Path | None = None,
    threshold: float | None = None,
    model: Path | None = None,
    heatmaps: Path | None = None,
) -> Path:
    """Write the HTML report for a predictions CSV.

    Args:
        predictions: CSV written by ``edgeleuk predict`` or ``edgeleuk watch``.
        out: HTML file to write (atomically).
        images: Folder the CSV's relative paths start from (the folder predict or watch was
            given); the only folder images are read from. None: no thumbnails, and the page
            and the log say so.
        threshold: Decision threshold to mark; None takes it from the rows (or reads it from the calls).
        model: A model file whose card summary the page embeds.
        heatmaps: The folder ``predict --heatmaps`` wrote; its overlays go next to the thumbnails
            (read only below it, through its ``index.csv``).

    Returns:
        ``out``.

    Raises:
        UsageError: The CSV is missing or is not a predictions file, ``images`` or ``heatmaps`` is
            not a folder, or ``model`` cannot be read.
        DataError: The CSV holds no rows.
    """
    out = Path(out)
    atomic_write_text(out, render_page(build_page(predictions, images, threshold, model=model, heatmaps=heatmaps)))
    return out
