"""Turn quality measures into reasons not to trust a call, and fit the accepted ranges.

The reasons are a fixed vocabulary (:data:`REASONS`), declared here once: rows, reports and
``serve`` answers carry them as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Preprocess
from edgeleuk.core.trust import DEFAULT_QUALITY, QualityRanges
from edgeleuk.quality.measures import QualityMeasures, measure

BLANK = "blank"  # nothing (or nearly nothing) to classify
AREA = "area"  # cell area outside the accepted range
OFF_CENTRE = "off_centre"  # the cell's centroid far from the image centre
EDGE_CUT = "edge_cut"  # the cell crosses the border of the crop the network sees
BLUR = "blur"  # out of focus (or an unusually sharp, noisy image)
EXPOSURE = "exposure"  # too dark, too bright or clipped at 255
STAIN = "stain"  # haematoxylin or eosin density outside the accepted range
BACKGROUND = "background"  # non-black pixels outside the crop: segmentation kept background
#: Every reason, in the order a row lists them.
REASONS = (BLANK, AREA, OFF_CENTRE, EDGE_CUT, BLUR, EXPOSURE, STAIN, BACKGROUND)

#: Which reason each measure of :class:`QualityRanges` gives when outside its range.
MEASURE_REASON = {
    "area_frac": AREA, "offset_frac": OFF_CENTRE, "edge_frac": EDGE_CUT, "focus": BLUR,
    "brightness": EXPOSURE, "clipped_frac": EXPOSURE, "od_hematoxylin": STAIN, "od_eosin": STAIN,
    "background_frac": BACKGROUND,
}
#: Nearly blank: cell pixels under 1 % of the crop, or a grey crop flatter than this standard
#: deviation (a uniform grey or white image). Fixed, not fitted: no model classifies nothing.
BLANK_AREA = 0.01
BLANK_CONTRAST = 2.0


def reasons_for(values: QualityMeasures, ranges: QualityRanges | None = None) -> tuple[str, ...]:
    """The reasons (in :data:`REASONS` order) the measures of one cell give; empty = ok.

    A blank image gives ``blank`` alone: its other measures mean nothing.
    """
    if values.area_frac < BLANK_AREA or values.contrast < BLANK_CONTRAST:
        return (BLANK,)
    ranges = ranges or DEFAULT_QUALITY
    found = set()
    for name, reason in MEASURE_REASON.items():
        lo, hi = getattr(ranges, name)
        if not lo <= getattr(values, name) <= hi:
            found.add(reason)
    return tuple(r for r in REASONS if r in found)


def assess(image: np.ndarray, ranges: QualityRanges | None = None,
           pre: Preprocess | None = None) -> tuple[str, ...]:
    """The reasons not to trust a call on ``image``; empty = ok.

    Args:
        image: One decoded cell, uint8 RGB ``[input_size, input_size, 3]``.
        ranges: The model's ranges; :data:`~edgeleuk.core.trust.DEFAULT_QUALITY` when None.
        pre: The model's preprocessing (the crop); the paper's when None.
    """
    return reasons_for(measure(image, pre), ranges)


@dataclass(frozen=True)
class _Fit:
    """How one measure's range is fitted: absolute slack, and whether only the top end is checked."""

    slack: float
    upper_only: bool = False
    log: bool = False  # fitted on the log scale (focus spans decades)
    floor: float = 0.0  # physical bounds
    ceiling: float = math.inf


#: Fitted range = robust percentiles widened by ``MARGIN`` of their spread plus the measure's slack.
#: The slack keeps a range from collapsing where the training cells barely vary (a few specks on
#: the crop border among thousands of clean ones).
FIT_PERCENTILES = (0.5, 99.5)
MARGIN = 0.25
_FITS = {
    "area_frac": _Fit(0.03),
    "offset_frac": _Fit(0.05, upper_only=True),
    "edge_frac": _Fit(0.03, upper_only=True, ceiling=1.0),
    "focus": _Fit(math.log(1.5), log=True),
    "brightness": _Fit(8.0, floor=0.0, ceiling=255.0),
    "clipped_frac": _Fit(0.02, upper_only=True, ceiling=1.0),
    "od_hematoxylin": _Fit(0.008),
    "od_eosin": _Fit(0.008),
    "background_frac": _Fit(0.005, upper_only=True, ceiling=1.0),
}
#: Fewest usable (non-blank) cells :func:`fit_ranges` fits on.
MIN_FIT_CELLS = 20


def _fit_one(values: np.ndarray, how: _Fit) -> tuple[float, float]:
    data = np.log(np.maximum(values, 1e-6)) if how.log else values
    lo, hi = np.percentile(data, FIT_PERCENTILES)
    pad = MARGIN * (hi - lo) + how.slack
    lo, hi = lo - pad, hi + pad
    if how.log:
        lo, hi = math.exp(lo), math.exp(hi)
    lo = how.floor if how.upper_only else max(float(lo), how.floor)
    return lo, min(float(hi), how.ceiling)


def fit_ranges(images: Iterable[np.ndarray], pre: Preprocess | None = None, *,
               how: str = "fit") -> QualityRanges:
    """Accepted ranges fitted on cells known to be good (training or calibration cells).

    Each range is the ``FIT_PERCENTILES`` of the cells' measure widened by ``MARGIN`` of the
    spread plus a per-measure slack. Blank cells are skipped.

    Args:
        images: Decoded cells (uint8 RGB).
        pre: The model's preprocessing; the paper's when None.
        how: What fitted them, recorded in ``source`` as ``"<how>:<n> cells"``.

    Raises:
        UsageError: Fewer than :data:`MIN_FIT_CELLS` non-blank cells.
    """
    rows = [m for m in (measure(img, pre) for img in images) if reasons_for(m) != (BLANK,)]
    if len(rows) < MIN_FIT_CELLS:
        raise UsageError(f"quality ranges need at least {MIN_FIT_CELLS} non-blank cells, got {len(rows)}")
    ranges = {name: _fit_one(np.array([getattr(m, name) for m in rows], np.float64), how_)
              for name, how_ in _FITS.items()}
    return QualityRanges(**ranges, source=f"{how}:{len(rows)} cells")
