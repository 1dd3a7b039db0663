"""Property tests of the stage chooser (edgeleuk.runtime.staged.choose_stage): it keeps its own bounds.

Random score sets of many shapes (20-200 cells, 8 rotations, spread and noise drawn per set,
labels loosely tied to the logits) and targets (0.9, 0.95, 0.99, 0.995 and random ones). The
checker below recomputes, from the view logits and the returned subset and margin alone, which
cells stop, how often their decision agrees with full TTA and what sensitivity staged TTA keeps:
none of the chooser's own figures is trusted. The scores are constructed, not a model's.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeleuk.core.numerics import sigmoid, threshold_logit
from edgeleuk.runtime.staged import StageChoice
from edgeleuk.workflow.stagecal import Scores, choose_for

# Deterministic in CI (derandomize: the examples follow from the test alone); a few seconds in all.
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

TARGETS = st.one_of(st.sampled_from([0.9, 0.95, 0.99, 0.995]), st.floats(0.8, 1.0, exclude_min=True))


@st.composite
def score_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """(view logits [n, 8], labels [n], threshold): per-cell centres with per-rotation scatter."""
    n = draw(st.integers(20, 200))
    seed = draw(st.integers(0, 2**32 - 1))
    spread = draw(st.floats(0.1, 6.0))  # how far cells lie from each other
    scatter = draw(st.floats(0.05, 3.0))  # how far one cell's rotations lie from each other
    label_noise = draw(st.floats(0.0, 4.0))
    threshold = draw(st.sampled_from([0.5, 0.2, 0.8, 0.05]))
    rng = np.random.default_rng(seed)
    centre = rng.normal(threshold_logit(threshold), spread, n)
    views = centre[:, None] + rng.normal(0.0, scatter, (n, 8))
    if draw(st.booleans()):  # some sets round the logits, so many cells tie
        views = np.round(views, 1)
    labels = (centre + rng.normal(0.0, label_noise, n) > threshold_logit(threshold)).astype(np.int64)
    return views, labels, threshold


def measured(views: np.ndarray, labels: np.ndarray, choice: StageChoice) -> tuple[int, float, float, float]:
    """Independently of the chooser: (stopped cells, their agreement, staged sensitivity, full sensitivity)."""
    t = threshold_logit(choice.threshold)
    full_pos = views.mean(axis=1) >= t
    first = views[:, list(choice.views)].mean(axis=1)
    stopped = np.abs(first - t) > choice.margin
    staged_pos = np.where(stopped, first >= t, full_pos)
    agreement = float(((first >= t) == full_pos)[stopped].mean()) if stopped.any() else 1.0
    positives = labels == 1
    if not positives.any():
        return int(stopped.sum()), agreement, 1.0, 1.0
    return int(stopped.sum()), agreement, float(staged_pos[positives].mean()), float(full_pos[positives].mean())


@PROPERTY
@given(scores=score_sets(), target=TARGETS)
def test_a_returned_choice_keeps_both_bounds_on_the_validation_cells(
    scores: tuple[np.ndarray, np.ndarray, float], target: float
) -> None:
    views, labels, threshold = scores
    # Through calibrate's own caller: a choice, or none and a line saying why.
    choice, note = choose_for(Scores(sigmoid(views.mean(axis=1)), labels, views, 0), threshold, target, "drawn")
    if choice is None:
        assert "no stage choice stored" in note and f"{100 * target:.2f} %" in note
        return
    stopped, agreement, sens_staged, sens_full = measured(views, labels, choice)
    assert stopped > 0, "a choice that stops no cell only adds an engine call"
    assert agreement >= target, f"stopped cells agree at {agreement:.4f} < target {target}"
    assert sens_staged >= sens_full, f"staged sensitivity {sens_staged:.4f} < full TTA's {sens_full:.4f}"
    # What the choice stores is what it measured: the same figures, not the chooser's guess.
    assert choice.agreement == agreement and choice.stop_share == stopped / len(views)
    if (labels == 1).any():
        assert (choice.sensitivity_staged, choice.sensitivity_full) == (sens_staged, sens_full)
