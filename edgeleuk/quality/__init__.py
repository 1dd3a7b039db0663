"""Know when not to trust a call: input-quality checks and out-of-distribution scores (torch-free).

* :func:`measure` / :func:`assess`: quality measures of one decoded cell and the reasons
  (:data:`REASONS`) it falls outside a model's :class:`~edgeleuk.core.trust.QualityRanges`;
* :func:`fit_ranges`: accepted ranges from cells known to be good;
* :func:`fit_ood` / :func:`ood_scores`: a PCA + Mahalanobis model of the graph's ``embedding``.

The records themselves (ranges, OOD model, defaults) live in :mod:`edgeleuk.core.trust`.
"""

from edgeleuk.core.trust import DEFAULT_QUALITY, OodModel, QualityRanges
from edgeleuk.quality.checks import (
    AREA,
    BACKGROUND,
    BLANK,
    BLUR,
    EDGE_CUT,
    EXPOSURE,
    MEASURE_REASON,
    OFF_CENTRE,
    REASONS,
    STAIN,
    assess,
    fit_ranges,
    reasons_for,
)
from edgeleuk.quality.measures import QualityMeasures, measure
from edgeleuk.quality.ood import conformal_threshold, fit_ood, ood_flags, ood_scores

__all__ = [
    "AREA", "BACKGROUND", "BLANK", "BLUR", "DEFAULT_QUALITY", "EDGE_CUT", "EXPOSURE", "MEASURE_REASON",
    "OFF_CENTRE", "REASONS", "STAIN", "OodModel", "QualityMeasures", "QualityRanges", "assess", "conformal_threshold",
    "fit_ood", "fit_ranges", "measure", "ood_flags", "ood_scores", "reasons_for",
]
