"""Rows per white cell of a smear field: ``predict --fields`` and ``watch --fields``.

A field (a camera image of a blood smear) is read with the bounded field decoder
(:func:`edgeleuk.fields.read_field`), its white cells are found and cut to the C-NMC form
(:func:`edgeleuk.fields.find_cells`), and the crops are classified in one engine call. Each
cell becomes one :class:`FieldRow`: the usual prediction columns preceded by
:data:`FIELD_COLUMNS` (field file, cell index, bounding box, centroid, area in um^2, where the
scale came from, the saved crop). A field that cannot be read or segmented, or holds no white
cell, becomes ONE error row (``cell`` empty): a hostile field costs a row, never the run. An
engine fault is not the field's fault: it propagates and no row is made for that field.

The counts of objects that were not classified (red cells, platelets, debris, cells cut by the
field's edge) go to the summary and to the sidecar ``<out>.fields.json`` (:class:`FieldLedger`),
which also records, for ``watch``, how many rows of the output belong to finished fields: a
restart cuts rows past that mark (a field interrupted mid-way) and does the field again whole.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeleuk import fields as fieldlib
from edgeleuk.core.errors import EdgeleukError, OutputError, UsageError
from edgeleuk.core.optics import UM_PER_PX_RANGE
from edgeleuk.core.text import printable
from edgeleuk.io.atomic import atomic_path, atomic_write_text
from edgeleuk.io.csvcells import name_to_text
from edgeleuk.runtime.classifier import Classifier, Prediction
from edgeleuk.workflow.csvlog import keep_rows
from edgeleuk.workflow.flags import DEFAULT_QC, judge
from edgeleuk.workflow.outputs import ResultRow
from edgeleuk.workflow.provenance import RunStamp, utc_now

log = logging.getLogger(__name__)

#: The columns a field's rows carry before the usual ones, in this order.
FIELD_COLUMNS = ("field", "cell", "bbox", "centroid", "area_um2", "scale_source", "crop")
#: Where a predictions file's per-field record lives: ``<out>.fields.json``.
FIELDS_SUFFIX = ".fields.json"
FIELDS_FORMAT = "edgeleuk.fields/1"
#: The scale source a row names when ``--um-per-px`` set it.
FLAG_SOURCE = "flag"
TIFF_SOURCE = "tiff"  # as edgeleuk.fields.SCALE_SOURCES names them
MAX_LEDGER_BYTES = 64 * 1024 * 1024  # a record per field: far below this for any session


@dataclass(frozen=True)
class FieldOptions:
    """How fields are cut into cells.

    Attributes:
        um_per_px: The camera's scale for every field (``--um-per-px``); None: the field's TIFF
            resolution tags, else the median red-cell diameter.
        model_um_per_px: The scale of the cells the model was trained on (``--model-um-per-px``);
            None: the model's metadata (a model without one needs the flag).
        save_crops: Folder to write each classified crop into (PNG), or None.
        overlays: Folder to write one overlay PNG per field into, or None.
    """

    um_per_px: float | None = None
    model_um_per_px: float | None = None
    save_crops: Path | None = None
    overlays: Path | None = None

    def __post_init__(self) -> None:
        lo, hi = UM_PER_PX_RANGE
        for name in ("um_per_px", "model_um_per_px"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and lo <= value <= hi):
                raise UsageError(f"--{name.replace('_', '-')} must be micrometres per pixel in {lo}..{hi}, got {value}")

    def check_folders(self, watched: Path | None = None, recursive: bool = False) -> None:
        """Refuse before any work a crop or overlay folder that cannot be written (exit 2).

        Args:
            watched: The folder ``watch`` reads fields from: the crops and overlays must not land
                where they would be read as new fields (in it, or below it with ``recursive``).
            recursive: Whether ``watch`` descends into sub-folders.
        """
        for flag, folder in (("--save-crops", self.save_crops), ("--overlays", self.overlays)):
            if folder is None:
                continue
            if watched is not None:
                real, root = Path(os.path.realpath(folder)), Path(os.path.realpath(watched))
                if real == root or (recursive and root in real.parents):
                    raise UsageError(f"{flag} {folder} lies in the watched folder: its PNGs would be read as new "
                                     "fields; choose a folder outside it")
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
                probe = Path(folder) / f".edgeleuk-probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise UsageError(f"cannot write {flag} {folder}: {exc.strerror or exc}") from exc


def model_scale(classifier: Classifier, options: FieldOptions) -> float:
    """The micrometres per pixel of the model's training cells: the flag, else the model's metadata.

    Raises:
        UsageError: Neither states it (exit 2, before any field is read).
    """
    if options.model_um_per_px is not None:
        return options.model_um_per_px
    stated = classifier.meta.um_per_px
    if stated is None:
        raise UsageError(
            "this model does not say at which scale its training cells were (no um_per_px in its metadata): "
            "give --model-um-per-px (the C-NMC cells' micrometres per pixel), or export it from a checkpoint "
            "that records its scale"
        )
    return float(stated)


def _pair(values: Sequence[float], digits: int | None) -> list:
    return [int(v) if digits is None else round(float(v), digits) for v in values]


@dataclass(frozen=True)
class FieldRow(ResultRow):
    """One cell of a field (or a field's single error row): :data:`FIELD_COLUMNS`, then the usual columns.

    ``path`` is the field's file, as for any input file; ``field`` repeats it so that a row of a
    field reads as such on its own.

    Attributes:
        field: The field file, as ``path``.
        cell: 1-based index of the cell in the field (reading order); None on a field's error row.
        bbox: ``(x0, y0, x1, y1)`` in field pixels. centroid: ``(x, y)`` in field pixels.
        area_um2: The cell's area in square micrometres.
        scale_source: Where the field's scale came from (``flag``, ``tiff``, ``red-cell-median``).
        crop: The saved crop's path (``--save-crops``), else None.
    """

    field: str = ""
    cell: int | None = None
    bbox: tuple[int, int, int, int] | None = None
    centroid: tuple[float, float] | None = None
    area_um2: float | None = None
    scale_source: str | None = None
    crop: str | None = None

    def header(self, with_truth: bool) -> tuple[str, ...]:
        return FIELD_COLUMNS + super().header(with_truth)

    def _lead(self) -> dict[str, Any]:
        return {
            "field": name_to_text(self.field),
            "cell": self.cell,
            "bbox": None if self.bbox is None else _pair(self.bbox, None),
            "centroid": None if self.centroid is None else _pair(self.centroid, 1),
            "area_um2": None if self.area_um2 is None else round(float(self.area_um2), 1),
            "scale_source": self.scale_source,
            "crop": None if self.crop is None else name_to_text(self.crop),
        }

    def as_dict(self, with_truth: bool) -> dict[str, Any]:
        """The field's columns (bbox and centroid as lists), then :meth:`ResultRow.as_dict`."""
        return self._lead() | super().as_dict(with_truth)

    def as_csv(self, with_truth: bool) -> dict[str, str]:
        """As text; bbox and centroid as space-separated numbers (``x0 y0 x1 y1``, ``x y``)."""
        cells = super().as_csv(with_truth)
        for key, value in self._lead().items():
            if isinstance(value, list):
                cells[key] = " ".join(str(v) for v in value)
        return cells


def parse_numbers(text: str | None) -> tuple[float, ...] | None:
    """``bbox`` or ``centroid`` as written in CSV (space-separated) back to numbers; None when empty or bad."""
    try:
        values = tuple(float(v) for v in (text or "").split())
    except ValueError:
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


@dataclass(frozen=True)
class FieldOutcome:
    """What one field gave.

    Attributes:
        rows: Its rows: one per classified cell, or one error row.
        record: Its entry in ``<out>.fields.json``.
        unreadable: The file could not be read as an image (``watch`` waits and tries again).
    """

    rows: tuple[FieldRow, ...]
    record: dict[str, Any]
    unreadable: bool = False


def _read(path: Path) -> fieldlib.FieldImage | str:
    """The decoded field, or the reason it cannot be read."""
    try:
        return fieldlib.read_field(path)
    except fieldlib.FieldError as exc:
        return str(exc)


def _excluded_text(excluded: Mapping[str, int]) -> str:
    found = [f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(excluded.items()) if n]
    return ", ".join(found) or "nothing"


class FieldRunner:
    """Cuts fields into cells and classifies them with one classifier and one set of options."""

    def __init__(self, classifier: Classifier, options: FieldOptions, stamp: RunStamp, qc: str = DEFAULT_QC) -> None:
        self.classifier = classifier
        self.options = options
        self.stamp = stamp
        self.qc = qc  # the run's --qc mode: a cell cut from a field is judged as any cell
        self.model_um_per_px = model_scale(classifier, options)
        self.stain = classifier.meta.stain_reference
        self.positive = classifier.meta.label_name(True)

    def error(self, rel: str, path: Path, why: str, *, subject: str | None = None,
              record: dict[str, Any] | None = None, unreadable: bool = False) -> FieldOutcome:
        """The one error row of a field that gave no cells, and its record."""
        record = {"cells": 0, "excluded": {}} if record is None else record
        prediction = Prediction(path=str(path), status="error", error=why)
        row = FieldRow(rel, prediction, subject, None, self.stamp, utc_now(), qc_mode=self.qc, field=rel)
        return FieldOutcome((row,), record | {"status": "error", "error": why, "rows": 1}, unreadable)

    def run(self, path: Path, rel: str, subject: str | None = None, truth: str | None = None) -> FieldOutcome:
        """Rows for the field in ``path``, shown as ``rel``.

        Raises:
            EngineFault: The engine failed: no rows for this field (``predict`` stops, ``watch`` retries).
            OutputError: A crop or overlay could not be written.
        """
        record: dict[str, Any] = {"cells": 0, "excluded": {}}
        image = _read(path)
        if isinstance(image, str):
            return self.error(rel, path, f"not read as a field: {image}", subject=subject, record=record,
                               unreadable=True)
        um, source = self.options.um_per_px, FLAG_SOURCE  # the flag first, then the file's tags
        if um is None and image.um_per_px is not None:
            um, source = image.um_per_px, image.scale_source or TIFF_SOURCE
        try:
            found = fieldlib.find_cells(image.rgb, um_per_px=um, model_um_per_px=self.model_um_per_px,
                                        stain=self.stain, size=self.classifier.input_size, scale_source=source)
        except fieldlib.FieldError as exc:  # no scale, crowded beyond any smear: the field's own fault
            return self.error(rel, path, f"no cells taken: {exc}", subject=subject, record=record)
        except (EdgeleukError, ValueError, MemoryError, cv2.error) as exc:  # a hostile field: its row, not the run
            log.debug("segmentation of %s failed", printable(rel), exc_info=True)
            return self.error(rel, path, f"cannot find cells: {type(exc).__name__}: {exc}", subject=subject,
                              record=record)
        source = found.scale_source
        excluded = {str(k): int(v) for k, v in found.excluded.items()}
        record |= {"excluded": excluded, "um_per_px": round(float(found.um_per_px), 5), "scale_source": source,
                   "seconds": round(float(found.seconds), 4)}
        if not found.cells:
            self._overlay(rel, image.rgb, found, [], record)
            return self.error(rel, path, f"no white cell found in the field (not classified: "
                               f"{_excluded_text(excluded)})", subject=subject, record=record)
        # An EngineFault propagates: the field is fine, so it gets no row.
        predictions = self.classifier.predict_arrays(np.stack([c.image for c in found.cells]))
        self._overlay(rel, image.rgb, found, [p.label for p in predictions], record)
        when = utc_now()
        rows = tuple(
            FieldRow(rel, judge(p, self.qc), subject, truth, self.stamp, when, qc_mode=self.qc, field=rel,
                     cell=int(c.index),
                     bbox=tuple(int(v) for v in c.bbox), centroid=tuple(float(v) for v in c.centroid),
                     area_um2=float(c.area_um2), scale_source=source, crop=self._save_crop(rel, c))
            for c, p in zip(found.cells, predictions, strict=True)
        )
        return FieldOutcome(rows, record | {"status": "ok", "error": None, "cells": len(rows), "rows": len(rows)})

    def _save_crop(self, rel: str, cell: Any) -> str | None:
        if self.options.save_crops is None:
            return None
        dest = _own_path(self.options.save_crops, rel, ".cells") / f"cell_{int(cell.index):03d}.png"
        _write_png(dest, cv2.imencode(".png", cv2.cvtColor(cell.image, cv2.COLOR_RGB2BGR))[1].tobytes())
        return str(dest)

    def _overlay(self, rel: str, rgb: np.ndarray, found: Any, calls: Sequence[str | None],
                 record: dict[str, Any]) -> None:
        if self.options.overlays is None:
            return
        dest = _own_path(self.options.overlays, rel, ".overlay.png")
        _write_png(dest, fieldlib.overlay_png(rgb, found, list(calls), positive=self.positive))
        record["overlay"] = name_to_text(str(dest))


def _own_path(root: Path, rel: str, tail: str) -> Path:
    """``root/<rel><tail>``: a field's own file, mirroring its place among the inputs.

    The whole name is kept (``a.png`` and ``a.tif`` must not share crops); a path that would leave
    ``root`` (absolute, ``..``) keeps only its name.
    """
    p = Path(rel)
    if p.is_absolute() or p.anchor or ".." in p.parts:
        p = Path(p.name)
    return Path(root) / p.parent / (p.name + tail)


def _write_png(dest: Path, data: bytes) -> None:
    try:
        with atomic_path(dest, suffix=".png") as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc} (free space, or choose another folder)") from exc


def fields_path(out: Path) -> Path:
    """The per-field record beside a predictions file: ``<out>.fields.json``."""
    out = Path(out)
    return out.with_name(out.name + FIELDS_SUFFIX)


@dataclass
class FieldLedger:
    """The per-field record of one output (``<out>.fields.json``): what each field held, and how far it went.

    Attributes:
        out: The predictions file it describes.
        fields: Field (as its rows name it) -> status, error, cells classified, excluded counts by kind,
            scale and its source, segmentation seconds, overlay.
        rows: Rows of ``out`` that belong to finished fields; rows past it (a field that was being
            written when a ``watch`` session stopped) are cut on restart and the field done again.
    """

    out: Path
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int = 0

    @property
    def path(self) -> Path:
        return fields_path(self.out)

    def add(self, rel: str, outcome: FieldOutcome) -> None:
        """Record a finished field (a field done again replaces its entry; its rows count again)."""
        self.fields[name_to_text(rel)] = outcome.record
        self.rows += len(outcome.rows)

    def excluded(self) -> Counter[str]:
        """Objects not classified, by kind, over every field."""
        total: Counter[str] = Counter()
        for entry in self.fields.values():
            total.update({k: int(v) for k, v in (entry.get("excluded") or {}).items()})
        return total

    def document(self) -> dict[str, Any]:
        sources = Counter(str(e.get("scale_source")) for e in self.fields.values() if e.get("scale_source"))
        return {
            "format": FIELDS_FORMAT, "rows": self.rows, "n_fields": len(self.fields),
            "cells": sum(int(e.get("cells") or 0) for e in self.fields.values()),
            "excluded": dict(sorted(self.excluded().items())), "scale_sources": dict(sorted(sources.items())),
            "fields": self.fields,
        }

    def write(self) -> None:
        """Replace the record atomically.

        Raises:
            OutputError: It could not be written (the rows are kept; a ``watch`` restart redoes the field).
        """
        try:
            atomic_write_text(self.path, json.dumps(self.document(), indent=1, sort_keys=False) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}; free space (or make the folder "
                              "writable) and run again") from exc

    @classmethod
    def read(cls, out: Path) -> FieldLedger | None:
        """The record beside ``out``; None when there is none or it cannot be used (a warning says why)."""
        path = fields_path(out)
        if not path.is_file():
            return None
        try:
            if path.stat().st_size > MAX_LEDGER_BYTES:
                raise ValueError(f"larger than {MAX_LEDGER_BYTES} bytes")
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FIELDS_FORMAT:
                raise ValueError(f"not an {FIELDS_FORMAT} file")
            entries = {str(k): v for k, v in dict(doc.get("fields") or {}).items() if isinstance(v, dict)}
            return cls(Path(out), entries, int(doc.get("rows") or 0))
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
            log.warning("%s cannot be used (%s): it is started again from the rows", path, exc)
            return None

    def describe(self) -> list[str]:
        """Summary lines: fields, cells, fields without a white cell, objects not classified, scale."""
        entries = list(self.fields.values())
        failed = [e for e in entries if e.get("status") != "ok"]
        empty = sum(str(e.get("error") or "").startswith("no white cell") for e in failed)
        lines = [
            f"  fields: {len(entries)}, white cells classified {sum(int(e.get('cells') or 0) for e in entries)}; "
            f"{empty} field(s) with no white cell, {len(failed) - empty} not read or not segmented (error rows)",
        ]
        excluded = self.excluded()
        lines.append(f"  not classified: {_excluded_text(excluded)} (per field in {self.path})")
        sources = Counter(str(e["scale_source"]) for e in entries if e.get("scale_source"))
        if sources:
            scales = [float(e["um_per_px"]) for e in entries if e.get("um_per_px")]
            lines.append(f"  scale from {', '.join(f'{k} ({n})' for k, n in sorted(sources.items()))}: "
                         f"{min(scales):.4g}-{max(scales):.4g} um/px")
        return lines


def resume_ledger(out: Path, rows: int) -> FieldLedger:
    """The record to continue ``out`` with (``watch --fields``), written; rows past its mark are cut from ``out``.

    Args:
        out: The predictions CSV (its header already checked).
        rows: Whole rows now in it.
    """
    ledger = FieldLedger.read(out)
    if ledger is None:
        if rows:
            log.warning("%s has %d row(s) but no %s beside it: they are taken as finished fields",
                        out, rows, fields_path(out).name)
        ledger = FieldLedger(Path(out), rows=rows)
    elif rows > ledger.rows:
        keep_rows(Path(out), ledger.rows)
        log.warning("%s: %d row(s) of a field that was being written when the last session stopped were "
                    "dropped; that field is done again whole", out, rows - ledger.rows)
    elif rows < ledger.rows:
        log.warning("%s holds %d row(s), fewer than %s records (%d): the file's rows are taken as they are",
                    out, rows, fields_path(out).name, ledger.rows)
        ledger.rows = rows
    ledger.write()  # before the first row: a field cut short in this session is known as such
    return ledger
