"""binary_metrics and per_subject_accuracy against scikit-learn, including edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgeleuk.core.errors import UsageError
from edgeleuk.evaluation.metrics import (
    MetricsInputError,
    binary_metrics,
    confusion,
    per_subject_accuracy,
    predict_labels,
    roc_auc,
)

skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn (dev extra) is the reference")


def _sklearn(t: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    p = (s >= threshold).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning: we compare the values it returns
        ref = {
            "accuracy": skm.accuracy_score(t, p),
            "precision": skm.precision_score(t, p, average="weighted", zero_division=0),
            "recall": skm.recall_score(t, p, average="weighted", zero_division=0),
            "f1": skm.f1_score(t, p, average="weighted", zero_division=0),
            "confusion": skm.confusion_matrix(t, p, labels=[0, 1]).tolist(),
        }
    if len(set(t)) == 2:
        ref["auc"] = skm.roc_auc_score(t, s)
        ref["sensitivity"] = skm.recall_score(t, p, pos_label=1)
        ref["specificity"] = skm.recall_score(t, p, pos_label=0)
    return ref


def _check(t, s, threshold=0.5):
    t, s = np.asarray(t), np.asarray(s, dtype=float)
    got = binary_metrics(t, s, threshold)
    for key, want in _sklearn(t, s, threshold).items():
        if key == "confusion":
            assert got[key] == want
        else:
            assert got[key] == pytest.approx(want, abs=1e-12), key
    return got


@pytest.mark.parametrize("seed", range(12))
def test_random_inputs_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    t = rng.integers(0, 2, n)
    s = np.round(rng.random(n), 1)  # rounding creates many tied scores
    _check(t, s, threshold=float(rng.choice([0.3, 0.5, 0.7])))


@pytest.mark.parametrize(
    "t, s",
    [
        ([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]),  # perfect
        ([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8]),  # all wrong
        ([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]),  # all tied, all predicted ALL
        ([1, 0, 1, 1], [0.0, 0.0, 0.0, 0.0]),  # nothing predicted ALL: ALL precision 0
        ([1, 1, 1, 1], [0.9, 0.2, 0.7, 0.4]),  # one class in y_true
        ([0, 0, 0], [0.9, 0.2, 0.7]),
        ([1], [0.7]),
        ([0, 1, 1], [0, 1, 0]),  # hard predictions
    ],
)
def test_edge_cases_match_sklearn(t, s):
    _check(t, s)


def test_single_class_undefined_values_are_none():
    m = binary_metrics([1, 1, 1], [0.9, 0.1, 0.8])
    assert m["auc"] is None and m["specificity"] is None
    assert m["sensitivity"] == pytest.approx(2 / 3)
    m = binary_metrics([0, 0], [0.1, 0.2])
    assert m["sensitivity"] is None and m["specificity"] == 1.0 and m["f1"] == 1.0


def test_threshold_is_inclusive_and_confusion_layout():
    m = binary_metrics([0, 0, 1, 1, 1], [0.5, 0.2, 0.5, 0.4, 0.9], threshold=0.5)
    # tn=1 (0.2), fp=1 (0.5 >= 0.5), fn=1 (0.4), tp=2
    assert m["confusion"] == [[1, 1], [1, 2]]
    assert (m["n"], m["n_all"], m["n_hem"]) == (5, 3, 2)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    assert m["f1_all"] == pytest.approx(skm.f1_score([0, 0, 1, 1, 1], [1, 0, 1, 0, 1]))
    assert m["f1_hem"] == pytest.approx(skm.f1_score([0, 0, 1, 1, 1], [1, 0, 1, 0, 1], pos_label=0))
    assert predict_labels([0.49, 0.5]).tolist() == [0, 1]
    assert confusion([1, 0], [1, 1]) == [[0, 1], [0, 1]]


def test_auc_ties_count_half():
    assert roc_auc([0, 1], [0.3, 0.3]) == 0.5
    assert roc_auc([0, 0, 1], [0.1, 0.4, 0.4]) == pytest.approx(0.75)
    assert roc_auc([1, 1], [0.1, 0.2]) is None


@pytest.mark.parametrize(
    "t, s, needle",
    [
        ([], [], "empty"),
        ([0, 1], [0.5], "shape"),
        ([0, 2], [0.5, 0.5], "only 0"),
        ([0, 1], [0.5, float("nan")], "NaN"),
        ([[0, 1]], [[0.5, 0.5]], "one-dimensional"),
    ],
)
def test_bad_input_raises_clear_error(t, s, needle):
    with pytest.raises(MetricsInputError, match=needle) as info:
        binary_metrics(t, s)
    assert isinstance(info.value, ValueError) and isinstance(info.value, UsageError)


def test_per_subject_accuracy():
    subjects = ["H1", "7", "7", "H1", "7", None]
    out = per_subject_accuracy(subjects, [0, 1, 1, 0, 1, 1], [0.2, 0.9, 0.3, 0.6, 0.8, 0.7])
    assert list(out) == ["7", "H1", "unknown"]
    assert out["7"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3), "healthy": False}
    assert out["H1"] == {"n": 2, "correct": 1, "accuracy": 0.5, "healthy": True}
    assert out["unknown"]["healthy"] is None and out["unknown"]["accuracy"] == 1.0
    with pytest.raises(MetricsInputError, match="subjects"):
        per_subject_accuracy(["1"], [1, 0], [0.5, 0.5])
