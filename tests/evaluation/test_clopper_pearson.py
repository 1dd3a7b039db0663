"""Exact binomial intervals without SciPy (edgeleuk.evaluation.metrics.clopper_pearson)."""

from __future__ import annotations

import pytest

from edgeleuk.evaluation.metrics import MetricsInputError, betainc, betainc_inverse, clopper_pearson

stats = pytest.importorskip("scipy.stats")
special = pytest.importorskip("scipy.special")

SIZES = (1, 2, 3, 4, 5, 7, 10, 16, 20, 29, 30, 31, 50, 64, 100, 257, 1000, 1867, 5000)


def _cases():
    for n in SIZES:
        for k in sorted({0, 1, 2, 3, n // 4, n // 3, n // 2, n - 3, n - 2, n - 1, n}):
            if 0 <= k <= n:
                yield k, n


@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.8])
def test_bounds_match_scipy_exact_interval(confidence: float) -> None:
    cases = list(_cases())
    assert len(cases) > 150
    for k, n in cases:
        want = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
        low, high = clopper_pearson(k, n, confidence)
        assert low == pytest.approx(want.low, abs=1e-11, rel=1e-9), (k, n)
        assert high == pytest.approx(want.high, abs=1e-11, rel=1e-9), (k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0


def test_incomplete_beta_and_its_inverse_match_scipy() -> None:
    for a, b in [(0.5, 0.5), (1, 1), (2, 30), (30, 2), (19, 2), (300, 700), (1.5, 4000)]:
        for x in (1e-6, 0.01, 0.2, 0.5, 0.8, 0.99, 1 - 1e-6):
            assert betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), abs=1e-12, rel=1e-9)
        for q in (0.025, 0.5, 0.975):
            assert betainc_inverse(a, b, q) == pytest.approx(special.betaincinv(a, b, q), abs=1e-11, rel=1e-9)


def test_edges_and_bad_input() -> None:
    assert clopper_pearson(0, 5)[0] == 0.0 and clopper_pearson(5, 5)[1] == 1.0
    assert clopper_pearson(0, 8)[1] == pytest.approx(1 - 0.025 ** (1 / 8))  # closed form at k = 0
    for k, n in [(-1, 5), (6, 5), (0, 0), (1.5, 3)]:
        with pytest.raises(MetricsInputError):
            clopper_pearson(k, n)
    with pytest.raises(MetricsInputError):
        clopper_pearson(1, 2, confidence=1.0)
