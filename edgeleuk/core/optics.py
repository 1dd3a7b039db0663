"""What a model knows about the optics of its training cells: scale and stain.

Torch-free. Cell size is diagnostic and the paper never rescaled its crops, so a field
from another microscope has to be brought to the training cells' scale (micrometres per
pixel) before a cell is cut from it; and the paper stain-normalised its cells, so a
field's cells are normalised to the training cells' colour statistics
(:class:`StainReference`). Both travel in :class:`~edgeleuk.core.meta.ModelMeta`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgeleuk.core.errors import CheckpointError

#: Median diameter of a human red blood cell in a dried smear, in micrometres (about 7.5 um,
#: 6.2-8.2 um normal range): the yardstick of a field whose scale nobody stated.
RED_CELL_DIAMETER_UM = 7.5

#: The scale ``edgeleuk synth`` draws its cells at (um per pixel): a synthetic HEM cell of
#: radius 97 px is then 10.7 um across, an ALL cell of 112 px 12.3 um, as lymphocytes and blasts are.
SYNTH_UM_PER_PX = 0.055

#: A scale outside this range (um per pixel) is no light microscope's: refused in metadata and flags.
UM_PER_PX_RANGE = (0.005, 5.0)

STAIN_METHODS = ("reinhard",)


def check_um_per_px(value: Any, what: str = "um_per_px") -> float:
    """A scale as a float, or :class:`CheckpointError` if it is no plausible micrometres-per-pixel figure."""
    lo, hi = UM_PER_PX_RANGE
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not lo <= value <= hi:
        raise CheckpointError(f"{what} must be a number of micrometres per pixel in {lo}..{hi}, got {value!r}")
    return float(value)


def _triple(name: str, value: Any, positive: bool = False) -> tuple[float, float, float]:
    if isinstance(value, list):
        value = tuple(value)
    ok = isinstance(value, tuple) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok or (positive and min(value) <= 0):
        kind = "positive finite" if positive else "finite"
        raise CheckpointError(f"stain_reference.{name} must be three {kind} numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


@dataclass(frozen=True)
class StainReference:
    """Colour statistics of the training cells, for Reinhard stain normalisation.

    Reinhard et al. (2001): each channel of CIE L*a*b* is shifted and scaled so the cell's
    mean and standard deviation match the reference. Statistics are taken over the cell's
    pixels only (the black outside the mask would swamp them).

    Attributes:
        method: ``"reinhard"`` (the only one so far).
        lab_mean: Mean L*, a*, b* of the training cells' pixels (L* in 0..100).
        lab_std: Their standard deviations (each > 0).
        cells: How many training cells the statistics came from.
    """

    method: str = "reinhard"
    lab_mean: tuple[float, float, float] = (50.0, 0.0, 0.0)
    lab_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    cells: int = 0

    def __post_init__(self) -> None:
        if self.method not in STAIN_METHODS:
            raise CheckpointError(f"stain_reference.method must be one of {STAIN_METHODS}, got {self.method!r}")
        object.__setattr__(self, "lab_mean", _triple("lab_mean", self.lab_mean))
        object.__setattr__(self, "lab_std", _triple("lab_std", self.lab_std, positive=True))
        if not isinstance(self.cells, int) or isinstance(self.cells, bool) or self.cells < 0:
            raise CheckpointError(f"stain_reference.cells must be a whole number >= 0, got {self.cells!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "lab_mean": list(self.lab_mean), "lab_std": list(self.lab_std),
                "cells": self.cells}

    @classmethod
    def from_dict(cls, d: Any) -> StainReference:
        """Inverse of :meth:`to_dict`; unknown keys and values of the wrong kind are errors."""
        if not isinstance(d, dict):
            raise CheckpointError(f"stain_reference must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"method", "lab_mean", "lab_std", "cells"}
        if unknown:
            raise CheckpointError(f"unknown stain_reference keys: {sorted(unknown)}")
        return cls(**d)
