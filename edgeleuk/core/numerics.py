"""The logistic link between a logit and the probability of ALL, both ways: one definition for edgeleuk.

The exported graph outputs ``prob`` = sigmoid(``logit``) in float32; wherever
edgeleuk computes a probability from a logit itself (staged TTA, training
validation, calibration) it uses :func:`sigmoid`, so the same logit gives the
same probability everywhere. A cell is called ALL when ``prob >= threshold``;
:func:`threshold_logit` gives the logit at which that starts, so logit-space
decisions (``logit >= threshold_logit(threshold)``) make the same calls.
"""

from __future__ import annotations

import math

import numpy as np


def sigmoid(logits: np.ndarray | float) -> np.ndarray:
    """Probability of ALL per logit, float32 like the graph's ``prob`` output.

    Computed in float64 and rounded once to float32, in the split form that never
    overflows: ``1 / (1 + e^-x)`` for ``x >= 0`` and ``e^x / (1 + e^x)`` below, with
    ``e^-|x| <= 1``. Every logit gives a value in [0, 1] without a warning: -inf -> 0,
    +inf -> 1; NaN stays NaN.
    """
    x = np.asarray(logits, dtype=np.float64)
    z = np.exp(-np.abs(x))  # in [0, 1]: no overflow for any |x|
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(np.float32)


def threshold_logit(threshold: float) -> float:
    """The logit cut of a probability threshold: ``logit >= cut`` iff ``sigmoid(logit) >= threshold``.

    Defined on the closed interval [0, 1]. At 0 every cell is called ALL (even a
    logit of -inf, whose probability is 0), so the cut is -inf; at 1 only a
    probability of exactly 1 qualifies, i.e. a logit of +inf, so the cut is +inf.
    Both ends compare right with ``>=``; ``>`` would drop the infinite logit itself.
    In between it is ``log(t / (1 - t))``. The float32 probability saturates at 1.0
    from a logit of about 16.6, so at thresholds within float32 rounding of 1 the
    probability calls more cells ALL than the exact cut does.

    Raises:
        ValueError: ``threshold`` is NaN or outside [0, 1].
    """
    t = float(threshold)
    if not 0.0 <= t <= 1.0:  # also refuses NaN
        raise ValueError(f"a probability threshold lies in [0, 1], got {threshold!r}")
    if t == 0.0:
        return -math.inf
    if t == 1.0:
        return math.inf
    return math.log(t / (1.0 - t))
