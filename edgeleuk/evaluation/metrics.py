"""Classification metrics for ALL (1, positive) vs HEM (0): numpy, no scikit-learn, no torch.

Definitions follow scikit-learn so numbers match the C-NMC leaderboard, which
ranked by weighted F1 (``f1_score(average="weighted")``):

* precision / recall / F1 are per-class values averaged with weights equal to
  each class's support in ``y_true``. A class with no predicted cells has
  precision 0 (scikit-learn's ``zero_division`` default, without the warning);
  a class absent from ``y_true`` has weight 0. Weighted recall equals accuracy.
* AUC is the area under the ROC curve of the scores, ties counted half (the
  Mann-Whitney statistic, equal to ``roc_auc_score``).
* A cell is called ALL when ``score >= threshold``.

Where a value is undefined scikit-learn warns or raises; here it is None:
``auc`` with a single class in ``y_true``, ``sensitivity`` without ALL cells,
``specificity`` without HEM cells. None stays valid in JSON (NaN would not).

:func:`clopper_pearson` gives the exact binomial confidence interval of a
proportion (sensitivity, specificity) without SciPy: the deployed side has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.io.data import is_healthy


class MetricsInputError(UsageError, ValueError):
    """Inputs that cannot be scored: empty, unequal lengths, labels not 0/1, NaN scores."""


def check_labels(y_true: Any) -> np.ndarray:
    """True labels as an int64 vector.

    Raises:
        MetricsInputError: Not one-dimensional, empty, or a value other than 0 (HEM) / 1 (ALL).
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise MetricsInputError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.size == 0:
        raise MetricsInputError("no samples to score (y_true is empty)")
    if not np.isin(y, (0, 1)).all():
        bad = sorted({str(v) for v in y[~np.isin(y, (0, 1))]})[:3]
        raise MetricsInputError(f"y_true must hold only 0 (HEM) and 1 (ALL); found {bad}")
    return y.astype(np.int64)


def check_scores(y_score: Any, n: int) -> np.ndarray:
    """Scores as a float64 vector of length ``n``.

    Raises:
        MetricsInputError: Another length or shape, NaN or infinity.
    """
    s = np.asarray(y_score, dtype=np.float64)
    if s.shape != (n,):
        raise MetricsInputError(f"scores have shape {s.shape} but y_true has {n} samples")
    if not np.isfinite(s).all():
        raise MetricsInputError("scores contain NaN or infinity")
    return s


def predict_labels(y_score: Any, threshold: float = 0.5) -> np.ndarray:
    """Hard labels: 1 (ALL) where ``score >= threshold``, else 0 (HEM)."""
    return (np.asarray(y_score, dtype=np.float64) >= threshold).astype(np.int64)


def confusion(y_true: Any, y_pred: Any) -> list[list[int]]:
    """Confusion matrix ``[[tn, fp], [fn, tp]]`` with ALL as the positive class."""
    t = check_labels(y_true)
    p = check_labels(y_pred)
    if p.shape != t.shape:
        raise MetricsInputError(f"y_pred has shape {p.shape} but y_true has {t.shape}")
    return [[int(np.sum((t == i) & (p == j))) for j in (0, 1)] for i in (0, 1)]


def roc_auc(y_true: Any, y_score: Any) -> float | None:
    """Area under the ROC curve (ties count half); None if ``y_true`` has one class only."""
    t = check_labels(y_true)
    s = check_scores(y_score, t.size)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Mid-ranks for tied scores: each group of equal scores shares its mean rank.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    mid = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(mid, ends - starts)
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def weighted_prf(cm: np.ndarray) -> tuple[float, float, float]:
    """Support-weighted precision, recall and F1 over the classes (scikit-learn "weighted").

    Args:
        cm: Confusion matrix ``[[tn, fp], [fn, tp]]`` holding at least one cell.
    """
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(predicted > 0, tp / predicted, 0.0)
        rec = np.where(support > 0, tp / support, 0.0)
        denom = 2 * tp + (predicted - tp) + (support - tp)
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    w = support / support.sum()
    return float(w @ prec), float(w @ rec), float(w @ f1)


def binary_metrics(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray,
                   threshold: float = 0.5) -> dict[str, Any]:
    """All the numbers the paper and the C-NMC challenge report, for one set of cells.

    Args:
        y_true: Labels, 1 = ALL, 0 = HEM.
        y_score: Probabilities of ALL, or hard 0/1 predictions (then AUC is that
            of the hard predictions, as scikit-learn would give).
        threshold: Scores at or above it are called ALL.

    Returns:
        Dict with ``n``, ``n_all``, ``n_hem``, ``threshold``, ``accuracy``,
        ``sensitivity`` (recall of ALL), ``specificity`` (recall of HEM),
        weighted ``precision``/``recall``/``f1``, per-class ``f1_all``/``f1_hem``,
        ``auc`` and ``confusion`` ``[[tn, fp], [fn, tp]]``. Undefined values are None.

    Raises:
        MetricsInputError: Empty input, unequal lengths, labels not 0/1, NaN scores.
    """
    t = check_labels(y_true)
    s = check_scores(y_score, t.size)
    cm = np.asarray(confusion(t, predict_labels(s, threshold)))
    (tn, fp), (fn, tp) = cm.tolist()
    precision, recall, f1 = weighted_prf(cm)
    support = cm.sum(axis=1)
    per_class_f1 = [_ratio(2 * int(cm[c, c]), int(support[c] + cm[:, c].sum())) or 0.0 for c in (0, 1)]
    return {
        "n": int(t.size),
        "n_all": int(tp + fn),
        "n_hem": int(tn + fp),
        "threshold": float(threshold),
        "accuracy": (tp + tn) / t.size,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "f1_all": per_class_f1[1],
        "f1_hem": per_class_f1[0],
        "auc": roc_auc(t, s),
        "confusion": cm.tolist(),
    }


def per_subject_accuracy(subjects: Sequence[str | None], y_true: Sequence[int] | np.ndarray,
                         y_score: Sequence[float] | np.ndarray,
                         threshold: float = 0.5) -> dict[str, dict[str, Any]]:
    """Accuracy per subject (in C-NMC every subject's cells share one class).

    Args:
        subjects: Subject id per cell (``H`` prefix = healthy); None is grouped as "unknown".
        y_true: Labels, 1 = ALL, 0 = HEM.
        y_score: Probabilities of ALL or hard 0/1 predictions.
        threshold: Scores at or above it are called ALL.

    Returns:
        ``{subject: {"n", "correct", "accuracy", "healthy"}}`` in sorted subject order;
        ``healthy`` is None for "unknown".
    """
    t = check_labels(y_true)
    correct = predict_labels(check_scores(y_score, t.size), threshold) == t
    subj = ["unknown" if s is None else str(s) for s in subjects]
    if len(subj) != t.size:
        raise MetricsInputError(f"{len(subj)} subjects but {t.size} labels")
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(subj)):
        mask = np.array([s == name for s in subj])
        n, k = int(mask.sum()), int(correct[mask].sum())
        healthy = None if name == "unknown" else is_healthy(name)
        out[name] = {"n": n, "correct": k, "accuracy": k / n, "healthy": healthy}
    return out


# --- exact binomial intervals (Clopper-Pearson), without SciPy --------------------------------

_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_TERMS = 100_000  # the fraction needs about sqrt(max(a, b)) terms; cells number far fewer


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, _CF_MAX_TERMS):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            h *= d * c
        if abs(d * c - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``x`` in [0, 1]."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast below the mean; above it use I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def betainc_inverse(a: float, b: float, q: float) -> float:
    """The ``x`` in [0, 1] with ``I_x(a, b) = q``, by bisection (``I`` rises with ``x``) to float precision."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    lo, hi = 0.0, 1.0
    for _ in range(1100):  # halving [0, 1] reaches the smallest double gap well within this
        mid = lo + (hi - lo) / 2.0
        if mid in (lo, hi):
            break
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return lo + (hi - lo) / 2.0


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided confidence interval of a binomial proportion ``k / n``.

    The bounds are the beta quantiles ``B(alpha/2; k, n-k+1)`` and ``B(1-alpha/2; k+1, n-k)``
    (0 when ``k = 0``, 1 when ``k = n``), as ``scipy.stats.binomtest(k, n).proportion_ci("exact")``.

    Args:
        k: Successes (e.g. ALL cells called ALL).
        n: Trials (e.g. ALL cells), at least 1.
        confidence: Coverage in (0, 1).

    Raises:
        MetricsInputError: ``n < 1``, ``k`` outside 0..n, or a confidence outside (0, 1).
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(k, (int, np.integer)) and 0 <= k <= n and n >= 1):
        raise MetricsInputError(f"an interval needs whole numbers 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise MetricsInputError(f"confidence must lie in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else betainc_inverse(k, n - k + 1, alpha / 2)
    high = 1.0 if k == n else betainc_inverse(k + 1, n - k, 1.0 - alpha / 2)
    return low, high
