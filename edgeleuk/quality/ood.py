"""Out-of-distribution scores in the graph's embedding space: PCA + Mahalanobis (+ residual).

:func:`fit_ood` fits an :class:`~edgeleuk.core.trust.OodModel` on calibration cells' embeddings;
:func:`ood_scores` scores new cells. The flag threshold is the ``percentile`` of *out-of-fold*
calibration scores (each fold scored by a PCA fitted without it): in-sample scores are
optimistic, and a threshold set on them flags more than ``100 - percentile`` % of new cells. It is
taken as a conformal quantile (:func:`conformal_threshold`), not an interpolated percentile, which
on a few hundred cells falls between the largest scores and flags more than asked.
"""

from __future__ import annotations

import math

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.core.trust import MAX_OOD_COMPONENTS, MAX_OOD_DIM, OodModel

#: Fewest calibration cells an OOD model is fitted on.
MIN_OOD_CELLS = 20
#: Folds the threshold's out-of-fold scores come from.
OOD_FOLDS = 5
#: Scores are capped here (a non-finite embedding scores the cap, so it is flagged, never NaN).
MAX_SCORE = 1e12
# A component whose variance is below this share of the largest is floored to it: whitening by a
# near-zero variance would turn rounding noise into huge scores.
_VAR_FLOOR = 1e-6


def _check(embeddings: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[1] < 1 or x.shape[1] > MAX_OOD_DIM:
        raise UsageError(f"embeddings must be [N, D] with 1 <= D <= {MAX_OOD_DIM}, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise UsageError(f"embeddings are {x.shape[1]} wide; the OOD model was fitted on {dim}")
    return x.astype(np.float64, copy=False)


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-``k`` principal directions ``[k, D]`` of ``x`` (``k < len(x)``)."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:k]


def _parts(x: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared coordinates ``[N, k]`` along the components, and squared residual norm ``[N]`` off them."""
    centred = x - mean
    z2 = (centred @ comps.T) ** 2
    return z2, np.maximum((centred ** 2).sum(axis=1) - z2.sum(axis=1), 0.0)


def _combine(z2: np.ndarray, var: np.ndarray, residual: np.ndarray, residual_var: float) -> np.ndarray:
    sq = (z2 / var).sum(axis=1)
    if residual_var > 0:
        sq = sq + residual / residual_var
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.sqrt(sq)
    return np.where(np.isfinite(out), np.minimum(out, MAX_SCORE), MAX_SCORE)


def conformal_threshold(scores: np.ndarray, percentile: float) -> float:
    """The calibration score that new cells like the calibration ones exceed at most ``100 - percentile`` % of the time.

    The ``ceil((n + 1) * percentile / 100)``-th smallest of the ``n`` scores (split conformal): a new
    cell exchangeable with them lands above it with probability at most ``1 - percentile / 100``.
    ``np.percentile``'s interpolation lies lower (at 99.5 on 240 cells, between the third and second
    largest: about 0.9 % flagged where 0.5 % is asked). With fewer than ``100 / (100 - percentile) - 1``
    cells that rank is past the last: the largest score is taken, which flags about ``1 / (n + 1)``.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil(round((len(ordered) + 1) * percentile / 100, 9))  # round: 0.995 * 1000 is 995.0000000000001
    return float(ordered[min(rank, len(ordered)) - 1])


def fit_ood(embeddings: np.ndarray, percentile: float = 99.5, k: int = MAX_OOD_COMPONENTS,
            *, seed: int = 0) -> OodModel:
    """Fit an OOD model on calibration cells' embeddings ``[N, D]``.

    Args:
        embeddings: One row per calibration cell (the graph's ``embedding`` output).
        percentile: Where the flag threshold sits among the out-of-fold calibration scores
            (:func:`conformal_threshold`): at most ``100 - percentile`` % of new cells like them are flagged.
        k: Principal components kept (at most 32, the cells minus one, and D).
        seed: Seeds the fold assignment.

    Raises:
        UsageError: Fewer than :data:`MIN_OOD_CELLS` cells, non-finite values, a bad ``k``
            or ``percentile``.
    """
    x = _check(embeddings)
    n, dim = x.shape
    if n < MIN_OOD_CELLS:
        raise UsageError(f"an OOD model needs at least {MIN_OOD_CELLS} cells, got {n}")
    if not np.isfinite(x).all():
        raise UsageError("embeddings hold NaN or infinite values; the OOD model cannot be fitted")
    if not 1 <= k <= MAX_OOD_COMPONENTS:
        raise UsageError(f"k must lie in 1..{MAX_OOD_COMPONENTS}, got {k}")
    if not 0 < percentile <= 100:
        raise UsageError(f"percentile must lie in (0, 100], got {percentile}")
    k = min(k, dim, n - -(-n // OOD_FOLDS) - 1)  # every fold's PCA (without its largest fold) finds k
    folds = np.random.default_rng(seed).permutation(n) % OOD_FOLDS
    z2, residual = np.empty((n, k)), np.empty(n)
    for f in range(OOD_FOLDS):
        test = folds == f
        mean, comps = _pca(x[~test], k)
        z2[test], residual[test] = _parts(x[test], mean, comps)
    # Variances and the residual's scale are out-of-fold means: a PCA's own cells lie closer to
    # its components, and further along them, than new cells do (much so when the cells are fewer
    # than the dimensions), so in-sample figures would flag far more new cells than asked for.
    var = np.maximum(z2.mean(axis=0), max(float(z2.mean(axis=0).max()), 1e-30) * _VAR_FLOOR)
    residual_var = float(residual.mean()) if k < dim and residual.mean() > 1e-12 else 0.0
    held_out = _combine(z2, var, residual, residual_var)
    mean, comps = _pca(x, k)
    return OodModel(
        mean=mean, components=comps, variances=var, residual_var=residual_var,
        threshold=conformal_threshold(held_out, percentile), percentile=float(percentile),
        n_cells=n, dim=dim,
    )


def ood_scores(model: OodModel, embeddings: np.ndarray) -> np.ndarray:
    """Each cell's OOD score (float64 ``[N]``, >= 0, finite; above ``model.threshold`` = flagged).

    Raises:
        UsageError: ``embeddings`` is not ``[N, model.dim]``.
    """
    x = _check(embeddings, model.dim)
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite row scores MAX_SCORE
        z2, residual = _parts(x, model.mean.astype(np.float64), model.components.astype(np.float64))
        return _combine(z2, model.variances.astype(np.float64), residual, model.residual_var)


def ood_flags(model: OodModel, scores: np.ndarray) -> np.ndarray:
    """True where a score lies above the model's threshold."""
    return np.asarray(scores) > model.threshold
