"""Choose a decision threshold for a target sensitivity (pure numpy).

A cell is called ALL (positive) when ``prob >= threshold``. For screening a
missed ALL cell costs more than a false alarm, so the user fixes the
sensitivity they need and we buy the best specificity the data allow:

1. Feasible thresholds reach ``sensitivity >= target`` on the labelled scores.
2. Among them take the highest specificity; among those the highest
   sensitivity (extra sensitivity that costs no specificity is free).
3. Every threshold in the resulting gap between two neighbouring scores makes
   the same calls on these data; we place it at the gap's midpoint so that
   small changes (float32 vs float64, CSV rounding) do not flip a cell that
   sat exactly on the threshold.

Sensitivity is compared with integer counts (``tp >= ceil(target * n_pos)``)
so ``0.95`` with 20 positives means exactly 19 of 20, free of float noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.evaluation.metrics import check_labels, check_scores, clopper_pearson, weighted_prf

#: Coverage of the exact intervals calibrate reports and stores.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class OperatingPoint:
    """The calls a threshold makes on labelled scores.

    Attributes:
        threshold: Decision threshold; ``prob >= threshold`` means ALL.
        tp: ALL cells called ALL.
        fn: ALL cells called HEM.
        tn: HEM cells called HEM.
        fp: HEM cells called ALL.
    """

    threshold: float
    tp: int
    fn: int
    tn: int
    fp: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    @property
    def sensitivity_ci(self) -> tuple[float, float] | None:
        """Exact (Clopper-Pearson) :data:`CONFIDENCE` interval of the sensitivity; None without ALL cells."""
        return clopper_pearson(self.tp, self.tp + self.fn, CONFIDENCE) if self.tp + self.fn else None

    @property
    def specificity_ci(self) -> tuple[float, float] | None:
        """Exact (Clopper-Pearson) :data:`CONFIDENCE` interval of the specificity; None without HEM cells."""
        return clopper_pearson(self.tn, self.tn + self.fp, CONFIDENCE) if self.tn + self.fp else None

    @property
    def accuracy(self) -> float:
        total = self.tp + self.fn + self.tn + self.fp
        return (self.tp + self.tn) / total if total else float("nan")

    @property
    def weighted_f1(self) -> float:
        """F1 per class averaged with class support as weights (sklearn ``average="weighted"``)."""
        if self.tp + self.fn + self.tn + self.fp == 0:
            return float("nan")
        return weighted_prf(np.array([[self.tn, self.fp], [self.fn, self.tp]]))[2]


def validate_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert scores and labels for threshold selection.

    Args:
        scores: Probability of ALL per cell.
        labels: True label per cell, 1 = ALL, 0 = HEM.

    Returns:
        ``(scores, labels)`` as float64 and int arrays.

    Raises:
        UsageError: No cells, shapes differ, scores are not finite or labels are not 0/1.
        DataError: Only one class is present.
    """
    y = check_labels(np.asarray(labels).ravel())
    s = check_scores(np.asarray(scores, dtype=np.float64).ravel(), y.size)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "ALL" if n_pos else "HEM"
        raise DataError(
            f"calibration needs both classes, but all {y.size} labelled cells are {only}: "
            "sensitivity and specificity cannot both be measured; use validation data with ALL and HEM cells"
        )
    return s, y


def operating_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> OperatingPoint:
    """Count the calls ``prob >= threshold`` makes against the true labels."""
    s, y = validate_scores(scores, labels)
    called = s >= threshold
    pos = y == 1
    return OperatingPoint(
        threshold=float(threshold),
        tp=int(np.sum(called & pos)),
        fn=int(np.sum(~called & pos)),
        tn=int(np.sum(~called & ~pos)),
        fp=int(np.sum(called & ~pos)),
    )


def select_threshold(scores: np.ndarray, labels: np.ndarray, target_sensitivity: float) -> OperatingPoint:
    """Pick the threshold reaching a sensitivity target with the best specificity.

    Args:
        scores: Probability of ALL per cell.
        labels: True label per cell, 1 = ALL, 0 = HEM.
        target_sensitivity: Required sensitivity in [0, 1].

    Returns:
        The chosen operating point on these data (see the module docstring for the rule).

    Raises:
        UsageError: The target lies outside [0, 1] or the inputs are malformed.
        DataError: Only one class is present.
    """
    if not 0.0 <= target_sensitivity <= 1.0:
        raise UsageError(f"target sensitivity must lie in [0, 1], got {target_sensitivity}")
    s, y = validate_scores(scores, labels)
    pos = np.sort(s[y == 1])
    neg = np.sort(s[y == 0])
    # Candidates from high to low: +inf (call nothing ALL), then every distinct score.
    cands = np.concatenate(([np.inf], np.unique(s)[::-1]))
    tp = pos.size - np.searchsorted(pos, cands, side="left")
    fp = neg.size - np.searchsorted(neg, cands, side="left")
    need = math.ceil(target_sensitivity * pos.size - 1e-9)
    feasible = np.flatnonzero(tp >= need)  # never empty: the lowest score calls everything ALL
    best_fp = fp[feasible].min()
    among = feasible[fp[feasible] == best_fp]
    k = int(among[np.argmax(tp[among])])
    threshold = _gap_midpoint(cands, k)
    return operating_point(s, y, threshold)


def _gap_midpoint(cands: np.ndarray, k: int) -> float:
    """A threshold inside ``(cands[k+1], cands[k]]`` that makes the same calls as ``cands[k]``."""
    if k == 0:  # above every score: nothing is called ALL
        return float(np.nextafter(cands[1], np.inf))
    upper = float(cands[k])
    if k + 1 >= cands.size:  # the lowest score: everything is called ALL
        return upper
    lower = float(cands[k + 1])
    mid = lower + (upper - lower) / 2.0
    return mid if lower < mid <= upper else upper
