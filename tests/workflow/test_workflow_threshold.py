"""Threshold selection for a target sensitivity (edgeleuk.workflow.threshold)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.workflow.threshold import operating_point, select_threshold


def _interleaved(n_pos: int = 20, n_neg: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping score distributions, all scores distinct."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.3, 1.0, n_pos)
    neg = rng.uniform(0.0, 0.7, n_neg)
    return np.concatenate([pos, neg]), np.array([1] * n_pos + [0] * n_neg)


def _brute_force_best_specificity(s: np.ndarray, y: np.ndarray, target: float) -> float:
    best = -1.0
    for t in np.concatenate([np.unique(s), [np.inf]]):
        op = operating_point(s, y, t)
        if op.tp >= np.ceil(target * y.sum() - 1e-9):
            best = max(best, op.specificity)
    return best


def test_target_095_with_20_positives_reaches_19_with_best_specificity() -> None:
    pos = np.linspace(0.35, 0.99, 20)
    neg = np.linspace(0.0, 0.6, 20)  # one HEM score (0.379) sits between the two lowest ALL scores
    s, y = np.concatenate([pos, neg]), np.array([1] * 20 + [0] * 20)
    op = select_threshold(s, y, 0.95)
    assert op.tp == 19 and op.fn == 1
    assert op.fp == int(np.sum(neg >= pos[1]))
    assert op.specificity == pytest.approx(_brute_force_best_specificity(s, y, 0.95))
    # The threshold really makes these calls on the raw scores.
    assert operating_point(s, y, op.threshold) == op


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.99])
def test_selection_matches_brute_force(target: float) -> None:
    s, y = _interleaved(n_pos=37, n_neg=23, seed=3)
    op = select_threshold(s, y, target)
    assert op.sensitivity >= target
    assert op.specificity == pytest.approx(_brute_force_best_specificity(s, y, target))


def test_free_sensitivity_is_taken_and_threshold_sits_in_the_gap() -> None:
    # The two lowest positives lie above every negative: catching both costs no specificity.
    s = np.array([0.9, 0.8, 0.6, 0.5, 0.3, 0.1])
    y = np.array([1, 1, 1, 1, 0, 0])
    op = select_threshold(s, y, 0.5)
    assert (op.tp, op.fp) == (4, 0)
    assert op.threshold == pytest.approx(0.4)  # midpoint of 0.3 (last HEM) and 0.5 (last ALL)


def test_tied_scores_are_called_together() -> None:
    # Three cells share 0.5: one ALL and two HEM. Reaching 3/3 ALL forces both HEM in.
    s = np.array([0.9, 0.8, 0.5, 0.5, 0.5, 0.2])
    y = np.array([1, 1, 1, 0, 0, 0])
    op = select_threshold(s, y, 1.0)
    assert (op.tp, op.fp, op.tn) == (3, 2, 1)
    assert 0.2 < op.threshold <= 0.5
    op = select_threshold(s, y, 0.6)
    assert (op.tp, op.fp) == (2, 0)
    assert 0.5 < op.threshold <= 0.8


def test_target_one_catches_every_positive() -> None:
    s, y = _interleaved(seed=5)
    op = select_threshold(s, y, 1.0)
    assert op.fn == 0
    assert op.threshold <= s[y == 1].min()
    assert op.specificity == pytest.approx(_brute_force_best_specificity(s, y, 1.0))


def test_target_zero_maximises_specificity_then_sensitivity() -> None:
    s, y = _interleaved(seed=7)
    op = select_threshold(s, y, 0.0)
    assert op.fp == 0
    assert op.tp == int(np.sum(s[y == 1] > s[y == 0].max()))


def test_target_zero_when_negatives_score_highest_calls_nothing() -> None:
    s = np.array([0.9, 0.8, 0.2, 0.1])
    y = np.array([0, 0, 1, 1])
    op = select_threshold(s, y, 0.0)
    assert (op.tp, op.fp) == (0, 0)
    assert op.threshold > 0.9


def test_one_class_is_refused() -> None:
    with pytest.raises(DataError, match="both classes"):
        select_threshold(np.array([0.1, 0.7, 0.9]), np.array([1, 1, 1]), 0.95)
    with pytest.raises(DataError, match="HEM"):
        select_threshold(np.array([0.1, 0.7]), np.array([0, 0]), 0.95)


@pytest.mark.parametrize(
    ("scores", "labels", "target"),
    [
        ([0.1, 0.9], [0, 1], 1.5),
        ([0.1, 0.9], [0, 1], -0.1),
        ([0.1, np.nan], [0, 1], 0.9),
        ([0.1, 0.9], [0, 2], 0.9),
        ([0.1, 0.9, 0.5], [0, 1], 0.9),
    ],
)
def test_malformed_inputs_are_usage_errors(scores: list, labels: list, target: float) -> None:
    with pytest.raises(UsageError):
        select_threshold(np.array(scores), np.array(labels), target)


def test_weighted_f1_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    s, y = _interleaved(seed=11)
    op = select_threshold(s, y, 0.9)
    pred = (s >= op.threshold).astype(int)
    assert op.weighted_f1 == pytest.approx(metrics.f1_score(y, pred, average="weighted"))
