"""``edgeleuk cells``: cut the white cells of many fields into a folder of C-NMC-form crops.

Torch-free. Each field is read (:func:`~edgeleuk.fields.image.read_field`) and searched
(:func:`~edgeleuk.fields.segment.find_cells`) on its own: a bad or hostile field costs one
error row in ``cells.csv``, never the run. Written into the output folder::

    CROPS/<field stem>_cell<NN>.png     each white cell, 450x450 RGB, black outside the cell
    CROPS/cells.csv                     field, cell, bbox, centroid, area_um2, scale_source, crop,
                                        excluded counts per kind, error (one error row per failed field)
    CROPS/overlays/<field stem>.png     with overlays=True: the field with every object outlined
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.optics import StainReference
from edgeleuk.fields.image import FieldError, read_field
from edgeleuk.fields.overlay import overlay_png
from edgeleuk.fields.results import EXCLUDED_KINDS
from edgeleuk.fields.segment import find_cells
from edgeleuk.io.atomic import atomic_path, atomic_write_text
from edgeleuk.io.csvcells import sheet_row

COLUMNS = ("field", "cell", "bbox", "centroid", "area_um2", "scale_source", "um_per_px", "crop",
           *(f"excluded_{k}" for k in EXCLUDED_KINDS), "error")


@dataclass
class CutSummary:
    """What :func:`cut_fields` did."""

    fields: int = 0
    cells: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # field -> error
    empty: list[str] = field(default_factory=list)  # fields without a white cell
    excluded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXCLUDED_KINDS, 0))

    def describe(self, out: Path) -> str:
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.excluded.items())
        lines = [f"{self.cells} white cells cut from {self.fields} fields into {out} (cells.csv lists them).",
                 f"Not classified: {counts}."]
        if self.empty:
            lines.append(f"{len(self.empty)} fields without a white cell.")
        lines += [f"error: {name}: {why}" for name, why in self.failed.items()]
        return "\n".join(lines)


def _png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB as PNG
        raise FieldError(f"OpenCV could not encode {path.name}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def cut_fields(paths: Sequence[Path], names: Sequence[str], out: Path, *, um_per_px: float | None,
               model_um_per_px: float, stain: StainReference | None = None, overlays: bool = False,
               progress: Callable[[str], None] | None = None) -> CutSummary:
    """Cut every field's white cells into ``out`` (layout in the module docstring).

    Args:
        paths: Field files.
        names: How each field is named in the rows (relative paths).
        out: Output folder (created).
        um_per_px: The fields' scale; None: from TIFF tags, else from the red cells.
        model_um_per_px: The model's scale (its training cells').
        stain: Stain-normalise the crops to this reference.
        overlays: Also write one overlay PNG per field (cells amber: not classified here).
        progress: Called with each field's name when it is done.
    """
    out.mkdir(parents=True, exist_ok=True)
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
    summary, rows = CutSummary(), []
    for path, name in zip(paths, names, strict=True):
        summary.fields += 1
        stem = Path(name).with_suffix("").as_posix().replace("/", "__")
        try:
            img = read_field(path)
            um, source = (um_per_px, "flag") if um_per_px is not None else (img.um_per_px, img.scale_source)
            res = find_cells(img.rgb, um_per_px=um, model_um_per_px=model_um_per_px, stain=stain,
                             scale_source=source or "flag")
        except FieldError as exc:
            summary.failed[name] = str(exc)
            rows.append({"field": name, "error": str(exc)})
            continue
        excl = {f"excluded_{k}": v for k, v in res.excluded.items()}
        for k, v in res.excluded.items():
            summary.excluded[k] += v
        if not res.cells:
            summary.empty.append(name)
            rows.append({"field": name, **excl, "scale_source": res.scale_source,
                         "um_per_px": f"{res.um_per_px:.5g}", "error": "no white cell in the field"})
        for cell in res.cells:
            crop = f"{stem}_cell{cell.index:02d}.png"
            _png(out / crop, cell.image)
            rows.append({"field": name, "cell": cell.index, "bbox": " ".join(map(str, cell.bbox)),
                         "centroid": f"{cell.centroid[0]:.1f} {cell.centroid[1]:.1f}",
                         "area_um2": f"{cell.area_um2:.1f}", "scale_source": res.scale_source,
                         "um_per_px": f"{res.um_per_px:.5g}", "crop": crop, **excl})
            summary.cells += 1
        if overlays:
            with atomic_path(out / "overlays" / f"{stem}.png") as tmp:
                tmp.write_bytes(overlay_png(img.rgb, res, [None] * len(res.cells)))
        if progress is not None:
            progress(name)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sheet_row({c: r.get(c, "") for c in COLUMNS}) for r in rows)
    atomic_write_text(out / "cells.csv", buf.getvalue())
    return summary
