"""Staged TTA's cascade and its stored choice, on a table of view logits (edgeleuk.runtime.staged).

No model: a stand-in ``run_views`` answers from the table, so the arithmetic is checked
exactly (float32, as the model file computes), at the margin's edge and at thresholds other
than 0.5; the stored choice's checks and messages are checked key by key.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeleuk.core.errors import UsageError
from edgeleuk.core.numerics import sigmoid, threshold_logit
from edgeleuk.runtime.staged import (
    META_EXTRA_KEY,
    StageChoice,
    StagedRunner,
    _score_subset,
    check_mode,
    choose_stage,
    run_staged,
    run_staged_extras,
    shift_floor,
    stage_choice_of,
)


def _choice(views: tuple[int, ...] = (2, 6), margin: float = 1.0, threshold: float = 0.5) -> StageChoice:
    return StageChoice(views=views, margin=margin, threshold=threshold, rotations=8, target_agreement=0.99,
                       agreement=1.0, stop_share=0.5, expected_views=5.0, cells=10, sensitivity_full=1.0,
                       sensitivity_staged=1.0)


def _table_views(table: np.ndarray):
    """``run_views`` answering cell i (first pixel i) with row i of ``table`` (kept in its own dtype)."""
    calls = []

    def run_views(batch: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append((batch[:, 0, 0, 0].tolist(), views.tolist(), views.dtype))
        out = table[batch[:, 0, 0, 0]][:, views]
        return out.mean(axis=1), out

    return run_views, calls


def _batch(n: int) -> np.ndarray:
    batch = np.zeros((n, 2, 2, 3), np.uint8)
    batch[:, 0, 0, 0] = np.arange(n)
    return batch


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.2])
def test_the_cascade_is_float32_exact_at_any_threshold(threshold: float) -> None:
    # The engine answers in float64 here: the cascade still computes and returns float32, as the file does.
    rng = np.random.default_rng(3)
    t = threshold_logit(threshold)
    table = t + rng.normal(0.0, 2.0, (40, 8))
    choice = _choice(threshold=threshold)
    run_views, calls = _table_views(table)
    logits, went_on = run_staged(run_views, _batch(40), choice)
    v32 = table.astype(np.float32)
    first = v32[:, [2, 6]].mean(axis=1, dtype=np.float32)
    expected_on = ~(np.abs(first.astype(np.float64) - t) > 1.0)
    assert 0 < expected_on.sum() < 40
    np.testing.assert_array_equal(went_on, expected_on)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits[~went_on], first[~went_on])
    np.testing.assert_array_equal(logits[went_on], v32[went_on].mean(axis=1, dtype=np.float32))
    assert [c[2] for c in calls] == [np.int64, np.int64]  # rotation indices as the views input takes them


def test_a_cell_exactly_at_the_margin_goes_on() -> None:
    table = np.zeros((3, 8), np.float32)
    table[0] = 1.0  # |stage 1 - 0| == margin: not beyond it, so it goes on
    table[1] = 1.5  # beyond: stops
    table[2] = -1.0
    logits, went_on = run_staged(_table_views(table)[0], _batch(3), _choice(margin=1.0))
    assert went_on.tolist() == [True, False, True]


def _table_views_extras(table: np.ndarray):
    """``run_views_extras`` answering from the table, in the table's own dtype.

    Cell i's embedding in view v is ``[t, -t]`` with t = table[i, v], its cam ``t`` on a 2x2 map;
    each a mean over the views asked for.
    """
    calls = []

    def run_views(batch: np.ndarray, views: np.ndarray, names: tuple[str, ...]):
        calls.append((batch[:, 0, 0, 0].tolist(), views.tolist(), views.dtype))
        out = table[batch[:, 0, 0, 0]][:, views]
        extras = {"embedding": np.stack([out, -out], axis=2).mean(axis=1)}
        if "cam" in names:
            extras["cam"] = np.repeat(out.mean(axis=1)[:, None, None], 2, axis=1).repeat(2, axis=2)
        return out.mean(axis=1), out, extras

    return run_views, calls


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.2])
def test_staged_extras_stop_the_same_cells_and_weight_each_stage_by_its_views(threshold: float) -> None:
    # float64 from the engine: the logits and the extras still come back float32, as the file computes.
    rng = np.random.default_rng(5)
    table = threshold_logit(threshold) + rng.normal(0.0, 2.0, (40, 8))
    choice = _choice(threshold=threshold)
    run_views, calls = _table_views_extras(table)
    logits, went_on, extras = run_staged_extras(run_views, _batch(40), choice, ("embedding",))
    want_logits, want_on = run_staged(_table_views(table)[0], _batch(40), choice)
    assert 0 < want_on.sum() < 40
    np.testing.assert_array_equal(went_on, want_on)
    assert logits.dtype == np.float32 and extras["embedding"].dtype == np.float32
    np.testing.assert_array_equal(logits, want_logits)
    first = np.array(np.stack([table, -table], axis=2)[:, [2, 6]].mean(axis=1), np.float32)
    rest = np.array(np.stack([table, -table], axis=2)[:, [0, 1, 3, 4, 5, 7]].mean(axis=1), np.float32)
    np.testing.assert_array_equal(extras["embedding"][~went_on], first[~went_on])
    # Stage 2's extras are weighted before they are rounded to float32: equal to within a rounding.
    np.testing.assert_allclose(extras["embedding"][went_on], ((2 * first + 6 * rest) / 8)[went_on], rtol=3e-7)
    assert [c[1] for c in calls] == [[2, 6], [0, 1, 3, 4, 5, 7]]
    assert calls[1][0] == np.flatnonzero(went_on).tolist() and [c[2] for c in calls] == [np.int64, np.int64]


def test_staged_extras_with_a_cam_compute_every_rotation_for_the_cells_that_go_on() -> None:
    rng = np.random.default_rng(6)
    table = rng.normal(0.0, 2.0, (30, 8))
    run_views, calls = _table_views_extras(table)
    logits, went_on, extras = run_staged_extras(run_views, _batch(30), _choice(), ("embedding", "cam"))
    assert 0 < went_on.sum() < 30 and calls[1][1] == list(range(8))
    np.testing.assert_array_equal(logits, run_staged(_table_views(table)[0], _batch(30), _choice())[0])
    full = np.array(table.mean(axis=1), np.float32)
    first = np.array(table[:, [2, 6]].mean(axis=1), np.float32)
    assert extras["cam"].dtype == np.float32 and extras["cam"].shape == (30, 2, 2)
    np.testing.assert_array_equal(extras["cam"][went_on][:, 0, 0], full[went_on])
    np.testing.assert_array_equal(extras["cam"][~went_on][:, 1, 1], first[~went_on])


def test_staged_extras_send_a_cell_exactly_at_the_margin_on() -> None:
    table = np.zeros((3, 8), np.float32)
    table[0], table[1], table[2] = 1.0, 1.5, -1.0  # at the margin, beyond it, at it
    _, went_on, _ = run_staged_extras(_table_views_extras(table)[0], _batch(3), _choice(margin=1.0), ("embedding",))
    assert went_on.tolist() == [True, False, True]


def test_the_runner_counts_across_calls_and_says_so() -> None:
    table = np.array([[3.0] * 8, [0.1] * 8, [-4.0] * 8, [0.2] * 8], np.float32)
    runner = StagedRunner(_table_views(table)[0], _choice(views=(0, 4)))
    logits, probs = runner(_batch(4))
    np.testing.assert_array_equal(probs, sigmoid(logits))
    runner(_batch(2))
    assert (runner.counts.cells, runner.counts.stage2) == (6, 3) and runner.counts.stage2_share == 0.5
    assert runner.describe() == ("staged TTA: 3 of 6 cells went on to stage 2 (50.0%); stage 1 rotations [0, 4] "
                                 "of 8, margin 1")


def test_a_stored_choice_is_checked_key_by_key() -> None:
    good = _choice(views=(0,), threshold=0.0).to_dict()
    assert StageChoice.from_dict(good).views == (0,)  # rotation 0 and threshold 0 are valid
    assert StageChoice.from_dict({**good, "views": [7], "threshold": 1.0}).views == (7,)
    with pytest.raises(UsageError, match=r"staged-TTA views \[8\] outside 0\.\.7"):
        StageChoice.from_dict({**good, "views": [8]})
    with pytest.raises(UsageError, match=r"staged-TTA views \[\] outside"):
        StageChoice.from_dict({**good, "views": []})
    with pytest.raises(UsageError, match=r"staged-TTA threshold 1\.5 outside \[0, 1\]"):
        StageChoice.from_dict({**good, "threshold": 1.5})
    with pytest.raises(UsageError, match=r"threshold 'x' outside \[0, 1\]"):
        StageChoice.from_dict({**good, "threshold": "x"})
    for bad in ({**good, "bogus": 1}, {k: v for k, v in good.items() if k != "margin"}, list(good)):
        with pytest.raises(UsageError, match="malformed staged-TTA choice in the model's metadata"):
            StageChoice.from_dict(bad)


def test_a_model_without_a_choice_is_told_how_to_get_one() -> None:
    with pytest.raises(UsageError) as err:
        stage_choice_of({}, 8, source="m.onnx")
    assert str(err.value) == (
        "m.onnx carries no calibrated stage choice, so --tta staged has nothing to stop on; choose one on "
        "labelled validation cells with `edgeleuk calibrate -m MODEL --data LABELLED --out MODEL2` (without "
        "labels nothing is guessed: use --tta full)")
    with pytest.raises(UsageError, match="m.onnx: stage choice made for 8 rotations, model has 4"):
        stage_choice_of({META_EXTRA_KEY: _choice().to_dict()}, 4, source="m.onnx")
    assert check_mode("staged") == "staged"
    with pytest.raises(UsageError, match="tta must be one of full, staged, got 'fast'"):
        check_mode("fast")


# --- the chooser's edges, on hand-made cells -----------------------------------------------------
# Rows [f, b, f, b, f, b, f, b]: stage 1 on the even rotations sees f, full TTA (f + b) / 2, exactly.
EVEN = (0, 2, 4, 6)


def _cells(*fb: tuple[float, float]) -> np.ndarray:
    return np.array([[f, b] * 4 for f, b in fb], np.float64)


def _score(views: np.ndarray, target: float):
    full = views.mean(axis=1)
    return _score_subset(views, np.zeros(len(views), np.int64), 0.0, EVEN, target, full)


def test_a_tie_is_stopped_whole_or_not_at_all() -> None:
    # Stage-1 distances 5, 3, 3, 1 (then 3 cells on the threshold): answers wrong, right, wrong, wrong.
    # Stopping the first two would agree at 50 %, but the third lies at the same distance: no margin
    # stops two of them, and with it agreement is 33 %. So nothing stops.
    views = _cells((5, -7), (3, 3), (3, -5), (1, -3), (0, 0), (0, 0), (0, 0))
    scored = _score(views, 0.5)
    assert scored.margin == math.inf and not scored.stopped.any() and scored.agreement == 1.0


def test_a_cell_exactly_at_the_floor_does_not_stop() -> None:
    # Distances 5, 3, 1, 0 with shifts 0, 4, 1, 0: the floor (60 % quantile, next order statistic up)
    # is 1, the third cell's distance. It cannot stop (a cell stops beyond the margin), so the first
    # two must keep the bound themselves (50 % < 60 %): only the first stops, at margin 3.
    views = _cells((5, 5), (3, -5), (1, 3), (0, 0))
    assert shift_floor(np.abs(views.mean(axis=1) - views[:, list(EVEN)].mean(axis=1)), 0.6) == 1.0
    scored = _score(views, 0.6)
    assert scored.margin == 3.0 and scored.stopped.tolist() == [True, False, False, False]


def test_agreement_exactly_at_the_bound_is_enough() -> None:
    # Nine cells right and one wrong, farthest first: 90 % agreement meets a 90 % bound. The other
    # 40 cells never move (the floor is 0) and sit on the threshold (they cannot stop).
    views = _cells((9, -11), *[(5, 5)] * 9, *[(0, 0)] * 40)
    scored = _score(views, 0.9)
    assert scored.stopped.sum() == 10 and scored.agreement == 0.9 and scored.margin == 0.0


def test_every_clear_cell_stops_even_close_to_the_threshold() -> None:
    # Every rotation agrees (shift 0, floor 0) and every cell is clear of the threshold, the nearest by 0.5.
    views = _cells(*[(d, d) for d in (4.0, -3.0, 2.0, -1.0, 0.5)])
    scored = _score(views, 0.995)
    assert scored.stopped.all() and scored.margin == 0.0


def test_no_finite_shift_means_no_floor_to_stop_beyond() -> None:
    assert shift_floor(np.array([np.nan, np.inf]), 0.9) == math.inf
    assert shift_floor(np.array([3.0, np.nan, 1.0, 2.0]), 0.5) == 2.0


def test_a_choice_describes_what_it_measured() -> None:
    choice = StageChoice(views=(1, 5), margin=0.75, threshold=0.4, rotations=8, target_agreement=0.995,
                         agreement=0.998, stop_share=0.625, expected_views=4.25, cells=160,
                         sensitivity_full=0.9, sensitivity_staged=0.95)
    assert choice.describe() == (
        "staged TTA: stage 1 rotations [1, 5] of 8, stop when |logit - threshold logit| > 0.75; on 160 labelled "
        "cells: 62.5 % stopped, agreement of stopped cells with full TTA 99.80 % (bound 99.50 %), sensitivity "
        "0.9500 (full TTA 0.9000), 4.25 rotations per cell on average")
    assert stage_choice_of({META_EXTRA_KEY: choice.to_dict()}, 8) == choice
    with pytest.raises(UsageError, match="^model carries no calibrated stage choice"):
        stage_choice_of({}, 8)


def test_a_single_clear_cell_is_enough_to_choose_on() -> None:
    choice = choose_stage(np.full((1, 8), 2.0), np.array([1]), 0.5, 0.995)
    assert choice is not None and choice.stop_share == 1.0 and choice.margin == 0.0 and choice.views == (0,)


def test_the_last_cell_that_would_lose_an_all_cell_goes_on() -> None:
    # 20 HEM cells clear of the threshold at distances 20..1 whose rotations all agree, then an ALL
    # cell that full TTA finds (mean 0.5) but the even rotations miss (-0.5): stopping it loses it.
    views = _cells(*[(d * (-1) ** d, d * (-1) ** d) for d in range(20, 0, -1)], (-0.5, 1.5))
    labels = np.array([0] * 20 + [1])
    scored = _score_subset(views, labels, 0.0, EVEN, 0.95, views.mean(axis=1))
    assert scored.margin == 0.5 and scored.stopped.tolist() == [True] * 20 + [False]
    assert scored.sensitivity == 1.0 and scored.expected_views == 4 + 4 / 21


def test_the_chooser_refuses_bad_input_and_says_what() -> None:
    views, labels = np.full((4, 8), 2.0), np.array([1, 0, 1, 0])
    shapes = r"need view logits \[cells, R\] and one label per cell, got "
    for bad_views, bad_labels, shown in [(np.zeros(4), labels, r"\(4,\), \(4,\)"),
                                         (views, labels[:3], r"\(4, 8\), \(3,\)"),
                                         (np.zeros((0, 8)), np.zeros(0), r"\(0, 8\), \(0,\)")]:
        with pytest.raises(UsageError, match=shapes + shown):
            choose_stage(bad_views, bad_labels, 0.5, 0.99)
    for target in (0.0, 1.5):
        with pytest.raises(UsageError, match=rf"the agreement bound must lie in \(0, 1\], got {target}"):
            choose_stage(views, labels, 0.5, target)
    for threshold in (-0.1, 1.5):
        with pytest.raises(UsageError, match=rf"the threshold must lie in \[0, 1\], got {threshold}"):
            choose_stage(views, labels, threshold, 0.99)
    with pytest.raises(UsageError, match="^staged TTA needs a model with at least 2 rotations$"):
        choose_stage(views[:, :1], labels, 0.5, 0.99)


def test_the_chooser_accepts_the_edges_and_records_what_it_saw() -> None:
    views, labels = np.full((4, 8), 2.0), np.array([1, 0, 1, 0])
    assert choose_stage(views, labels, 0.0, 1.0) is None  # threshold 0: every cell ALL, nothing to stop on
    assert choose_stage(views, labels, 1.0, 1.0) is None
    two = choose_stage(views[:, :2], labels, 0.5, 1.0)  # the least rotations that can be staged
    assert two.views == (0,) and two.rotations == 2 and two.cells == 4 and two.data == ""
    hem = choose_stage(views, np.zeros(4, np.int64), 0.5, 0.99, data="cells/")
    assert hem.data == "cells/" and math.isnan(hem.sensitivity_full) and math.isnan(hem.sensitivity_staged)


def test_among_equally_cheap_subsets_the_better_agreeing_one_wins() -> None:
    # Both single even and odd rotations stop the same two cells, but even ones get one of them wrong.
    views = np.zeros((50, 8))
    views[0] = [-9, 20] * 4
    views[1] = 10.0
    choice = choose_stage(views, np.zeros(50, np.int64), 0.5, 0.5)
    assert choice.views == (1,) and choice.agreement == 1.0 and choice.expected_views == 1 + 48 / 50 * 7


def test_float32_logits_are_averaged_in_float64() -> None:
    # In float32, 1e8 - 1 rounds to 1e8 and this ALL cell's full-TTA mean comes out 0 (ALL); exactly it
    # is -1/8 (HEM), so full TTA misses the only ALL cell. The 20 clear HEM cells give a choice.
    views = np.full((21, 8), -5.0, np.float32)
    views[0] = [1e8, -1, -1e8, 0, 0, 0, 0, 0]
    labels = np.array([1] + [0] * 20)
    choice = choose_stage(views, labels, 0.5, 0.9)
    assert choice is not None and choice.sensitivity_full == 0.0
