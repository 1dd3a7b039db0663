"""Smear fields: find the white cells in a microscope camera's frame and cut each to the C-NMC form.

Torch-free (OpenCV and numpy), beside ``evaluation`` and ``synth`` in the layers; ``workflow``
(``predict/watch --fields``) and the ``cells`` command build on it::

    from edgeleuk.fields import find_cells, read_field, overlay_png
    f = read_field("field.tif")                      # FieldError for a bad or hostile file
    res = find_cells(f.rgb, um_per_px=f.um_per_px, model_um_per_px=meta.um_per_px,
                     scale_source=f.scale_source or "flag")
    for cell in res.cells: ...                       # cell.image: uint8 [450, 450, 3], C-NMC form
    png = overlay_png(f.rgb, res, calls)             # calls: one class name (or None) per cell
"""

from __future__ import annotations

from edgeleuk.fields.image import FIELD_MAX_BYTES, FIELD_MAX_PIXELS, FieldError, FieldImage, decode_field, read_field
from edgeleuk.fields.overlay import overlay_png
from edgeleuk.fields.results import EXCLUDED_KINDS, SCALE_SOURCES, CellCrop, FieldResult, Outline
from edgeleuk.fields.segment import estimate_scale, find_cells
from edgeleuk.fields.stain import reference_from_cells

__all__ = [
    "EXCLUDED_KINDS",
    "FIELD_MAX_BYTES",
    "FIELD_MAX_PIXELS",
    "SCALE_SOURCES",
    "CellCrop",
    "FieldError",
    "FieldImage",
    "FieldResult",
    "Outline",
    "decode_field",
    "estimate_scale",
    "find_cells",
    "overlay_png",
    "read_field",
    "reference_from_cells",
]
