"""The training cells' scale and stain reference, for the checkpoint's metadata.

The scale is the recipe's ``um_per_px`` (stated by the user for real data) or the one
``edgeleuk synth`` recorded beside its cells; without either the model has none, and
``--fields`` then needs ``--model-um-per-px``. The stain reference is Reinhard's
L*a*b* statistics over the cell pixels of up to :data:`STAIN_CELLS` training cells.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeleuk.core.optics import StainReference
from edgeleuk.fields.stain import reference_from_cells
from edgeleuk.io.data import Record, spread
from edgeleuk.io.imageio import decode_image
from edgeleuk.synth.dataset import recorded_scale

#: Training cells the stain reference is taken from (evenly spread over folds and classes).
STAIN_CELLS = 200
log = logging.getLogger(__name__)


def training_scale(data: Path, stated: float | None) -> float | None:
    """The recipe's stated scale, else the synthetic data's recorded one, else None (said in the log)."""
    if stated is not None:
        return stated
    scale = recorded_scale(data)
    if scale is None:
        log.info("the training cells' scale is unknown (set um_per_px in the recipe): the model will not "
                 "state it, and --fields will need --model-um-per-px")
    return scale


def training_stain(records: list[Record]) -> StainReference | None:
    """Reinhard statistics of up to :data:`STAIN_CELLS` training cells; None if none decodes."""
    images = (decode_image(r.path) for r in spread(records, STAIN_CELLS))
    try:
        return reference_from_cells(d.image for d in images if d.ok)
    except ValueError:
        return None
