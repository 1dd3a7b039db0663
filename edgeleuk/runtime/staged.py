"""Staged (early-exit) rotation TTA: stop after a few rotations when the answer is clear.

The model's answer is the mean logit over R rotations. Stage 1 computes a subset
of them; a cell whose stage-1 mean logit lies more than ``margin`` from the
threshold's logit stops there with that mean. Every other cell computes the
remaining rotations, and its logit is then the full R-rotation mean (the sum of
both stages' view logits / R), exactly the file's own result up to float summation.
This is the confidence-gated cascade of AdapTTA (Mocerino et al., arXiv 2105.06183)
with the views of one test-time augmentation as the stages.

Subset and margin are chosen on labelled validation cells (:func:`choose_stage`,
run by ``edgeleuk calibrate``): the stopped cells' decisions must agree with full
TTA at least at the target rate, and sensitivity at the threshold must not drop.
The choice travels in the model's metadata (``meta.extra["staged_tta"]``) together
with what it measured; a model without one refuses staged inference. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.core.numerics import sigmoid, threshold_logit

#: Where the stage choice lives in ``ModelMeta.extra``.
META_EXTRA_KEY = "staged_tta"
#: Default bound on the agreement of stopped cells with full TTA.
DEFAULT_AGREEMENT = 0.995
#: TTA modes of ``Classifier``/``predict``/``watch``/``bench``.
TTA_MODES = ("full", "staged")

RunViews = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class StageChoice:
    """The stage-1 rotations and stopping margin, with what they measured where chosen.

    Attributes:
        views: Stage-1 rotation indices (into the model's angles).
        margin: A cell stops when ``|stage-1 mean logit - threshold logit| > margin``.
        threshold: Probability threshold the choice was made at; it holds only there.
        rotations: The model's number of rotations R.
        target_agreement: Required agreement of stopped cells with full TTA.
        agreement: Measured agreement of the stopped cells (1.0 when none stopped).
        stop_share: Share of the validation cells that stopped after stage 1.
        expected_views: Mean rotations computed per cell on the validation cells.
        cells: Labelled validation cells measured.
        sensitivity_full: Sensitivity of full TTA at ``threshold`` on them.
        sensitivity_staged: Sensitivity of staged TTA at ``threshold`` on them.
        data: Where the validation cells came from.
    """

    views: tuple[int, ...]
    margin: float
    threshold: float
    rotations: int
    target_agreement: float
    agreement: float
    stop_share: float
    expected_views: float
    cells: int
    sensitivity_full: float
    sensitivity_staged: float
    data: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["views"] = list(self.views)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageChoice:
        """Inverse of :meth:`to_dict`.

        Raises:
            UsageError: Missing or unknown keys, views outside 0..R-1, or a threshold outside [0, 1].
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) - names or {"views", "margin", "threshold", "rotations"} - set(d):
            raise UsageError(f"malformed staged-TTA choice in the model's metadata: {d!r}")
        choice = cls(**{**d, "views": tuple(int(v) for v in d["views"])})
        if not choice.views or any(not 0 <= v < choice.rotations for v in choice.views):
            raise UsageError(f"staged-TTA views {list(choice.views)} outside 0..{choice.rotations - 1}")
        if not isinstance(choice.threshold, (int, float)) or not 0.0 <= choice.threshold <= 1.0:
            raise UsageError(f"staged-TTA threshold {choice.threshold!r} outside [0, 1]")
        return choice

    @property
    def rest(self) -> tuple[int, ...]:
        """Stage-2 rotations: those stage 1 left out, in order."""
        return tuple(v for v in range(self.rotations) if v not in self.views)

    def describe(self) -> str:
        return (f"staged TTA: stage 1 rotations {list(self.views)} of {self.rotations}, stop when "
                f"|logit - threshold logit| > {self.margin:.4g}; on {self.cells} labelled cells: "
                f"{100 * self.stop_share:.1f} % stopped, agreement of stopped cells with full TTA "
                f"{100 * self.agreement:.2f} % (bound {100 * self.target_agreement:.2f} %), sensitivity "
                f"{self.sensitivity_staged:.4f} (full TTA {self.sensitivity_full:.4f}), "
                f"{self.expected_views:.2f} rotations per cell on average")


def candidate_subsets(rotations: int) -> list[tuple[int, ...]]:
    """Evenly spaced proper subsets: sizes R/2, R/4, ... 1, every offset.

    Evenly spaced rotations see the cell from spread-out directions; a short list
    also keeps the choice from fitting the validation cells' noise.
    """
    subsets = []
    size = rotations // 2
    while size >= 1 and rotations % size == 0:
        step = rotations // size
        subsets += [tuple(range(offset, rotations, step)) for offset in range(step)]
        size //= 2
    return subsets


def shift_floor(shift: np.ndarray, target: float) -> float:
    """The least margin: the ``target`` quantile of ``|full-TTA logit - stage-1 logit|`` over the cells.

    Taken at the next order statistic up (numpy's ``higher``), so with fewer than
    ``1 / (1 - target)`` cells it is the largest shift seen: small validation sets get the
    strictest margin, larger ones a tighter one the data support.
    """
    shift = shift[np.isfinite(shift)]
    return float(np.quantile(shift, target, method="higher")) if shift.size else math.inf


@dataclass(frozen=True)
class _Scored:
    subset: tuple[int, ...]
    margin: float
    stopped: np.ndarray
    agreement: float
    sensitivity: float
    expected_views: float


def _score_subset(view_logits: np.ndarray, labels: np.ndarray, t_logit: float, subset: tuple[int, ...],
                  target: float, full: np.ndarray) -> _Scored:
    """The smallest margin (most cells stopped) for ``subset``, at or above the shift floor, that keeps both bounds.

    The bounds are checked on exactly the cells that margin stops; when none can stop, the margin is infinite.
    """
    n, rotations = view_logits.shape
    full_pos = full >= t_logit
    first = view_logits[:, list(subset)].astype(np.float64).mean(axis=1)
    distance = np.abs(first - t_logit)
    order = np.argsort(-distance, kind="stable")  # farthest first: they stop first
    disagree = np.cumsum((first[order] >= t_logit) != full_pos[order])
    lost_tp = np.cumsum((labels[order] == 1) & full_pos[order] & (first[order] < t_logit))
    gained_tp = np.cumsum((labels[order] == 1) & ~full_pos[order] & (first[order] >= t_logit))
    k = np.arange(1, n + 1)
    # Agreement as the stopped cells' mean (what a reader of the choice recomputes), not a tolerance.
    ok = ((k - disagree) / k >= target) & (gained_tp >= lost_tp) & np.isfinite(distance[order])
    # Stopping the k farthest needs a margin below the k-th distance and at or above the next one.
    distinct = np.append(distance[order][:-1] > distance[order][1:], distance[order][-1] > 0.0)
    # Few cells lie near the threshold, so their agreement alone fits their own noise (a margin
    # chosen so on 150 synthetic cells agreed at 96 % on fresh ones). Every cell shows how far
    # the other rotations can still move a stage-1 logit: stop only beyond the target quantile
    # of that shift, so a stopped cell flips with probability below 1 - target.
    floor = shift_floor(np.abs(full - first), target)
    # The floor stops only the cells beyond it, a prefix of ``order``; that prefix must keep both
    # bounds itself (raising the margin to the floor after the search once returned one that broke them).
    beyond = int(np.count_nonzero(distance > floor))
    valid = np.flatnonzero(ok & distinct)
    valid = valid[valid < beyond]
    if valid.size == 0:
        margin = math.inf
    else:
        last = valid[-1]
        margin = max(float(distance[order][last + 1]) if last + 1 < n else 0.0, floor)
    stopped = distance > margin
    staged_pos = np.where(stopped, first >= t_logit, full_pos)
    positives = labels == 1
    agreement = float(((first >= t_logit) == full_pos)[stopped].mean()) if stopped.any() else 1.0
    sensitivity = float(staged_pos[positives].mean()) if positives.any() else float("nan")
    views = len(subset) + (1.0 - stopped.mean()) * (rotations - len(subset))
    return _Scored(subset, margin, stopped, agreement, sensitivity, float(views))


def choose_stage(view_logits: np.ndarray, labels: np.ndarray, threshold: float,
                 target_agreement: float = DEFAULT_AGREEMENT, data: str = "") -> StageChoice | None:
    """Pick the stage-1 rotations and margin that compute the fewest rotations within the bounds.

    For each candidate subset the margin is the smallest at which the stopped
    cells still agree with full TTA at ``target_agreement`` or better and staged
    TTA finds at least as many ALL cells as full TTA, and at least
    :func:`shift_floor`: the ``target_agreement`` quantile, over all cells, of how
    far the remaining rotations moved the stage-1 logit (so the bound holds on new
    cells, not only on these). The subset with the fewest rotations per cell on
    average wins.

    Args:
        view_logits: Every rotation's logit, [cells, R], from the model file itself.
        labels: 1 = ALL, 0 = HEM per cell.
        threshold: Probability threshold the decisions are made at.
        target_agreement: Bound on the stopped cells' agreement with full TTA, in (0, 1].
        data: Where the cells came from (stored with the choice).

    Returns:
        The choice, or None when no subset stops any cell within the bounds
        (staged TTA would then only add an engine call).

    Raises:
        UsageError: Bad shapes, a bound outside (0, 1], a threshold outside [0, 1], or fewer
            than 2 rotations.
    """
    view_logits, labels = np.asarray(view_logits, np.float64), np.asarray(labels).astype(np.int64)
    if view_logits.ndim != 2 or labels.shape != (view_logits.shape[0],) or view_logits.shape[0] == 0:
        raise UsageError(f"need view logits [cells, R] and one label per cell, got {view_logits.shape}, {labels.shape}")
    if not 0.0 < target_agreement <= 1.0:
        raise UsageError(f"the agreement bound must lie in (0, 1], got {target_agreement}")
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"the threshold must lie in [0, 1], got {threshold}")
    rotations = view_logits.shape[1]
    if rotations < 2:
        raise UsageError("staged TTA needs a model with at least 2 rotations")
    t_logit = threshold_logit(threshold)
    full = view_logits.mean(axis=1)
    full_pos = full >= t_logit
    scored = [_score_subset(view_logits, labels, t_logit, s, target_agreement, full)
              for s in candidate_subsets(rotations)]
    scored = [s for s in scored if s.stopped.any()]
    if not scored:
        return None
    best = min(scored, key=lambda s: (s.expected_views, -s.agreement))
    positives = labels == 1
    return StageChoice(
        views=best.subset, margin=best.margin, threshold=float(threshold), rotations=rotations,
        target_agreement=float(target_agreement), agreement=best.agreement,
        stop_share=float(best.stopped.mean()), expected_views=best.expected_views, cells=len(labels),
        sensitivity_full=float(full_pos[positives].mean()) if positives.any() else float("nan"),
        sensitivity_staged=best.sensitivity, data=data,
    )


def stage_choice_of(extra: dict[str, Any], rotations: int, source: str = "model") -> StageChoice:
    """The stage choice stored in a model's ``meta.extra``.

    Raises:
        UsageError: The model carries none (or one made for another rotation count).
    """
    raw = extra.get(META_EXTRA_KEY)
    if raw is None:
        raise UsageError(
            f"{source} carries no calibrated stage choice, so --tta staged has nothing to stop on; choose one "
            "on labelled validation cells with `edgeleuk calibrate -m MODEL --data LABELLED --out MODEL2` "
            "(without labels nothing is guessed: use --tta full)"
        )
    choice = StageChoice.from_dict(raw)
    if choice.rotations != rotations:
        raise UsageError(f"{source}: stage choice made for {choice.rotations} rotations, model has {rotations}")
    return choice


@dataclass
class StagedCounts:
    """Running totals of a staged classifier: how many cells went on to stage 2."""

    cells: int = 0
    stage2: int = 0

    @property
    def stage2_share(self) -> float:
        return self.stage2 / self.cells if self.cells else 0.0

    def describe(self, choice: StageChoice) -> str:
        return (f"staged TTA: {self.stage2} of {self.cells} cells went on to stage 2 ({self.stage2_share:.1%}); "
                f"stage 1 rotations {list(choice.views)} of {choice.rotations}, margin {choice.margin:.4g}")


def run_staged(run_views: RunViews, batch: np.ndarray, choice: StageChoice) -> tuple[np.ndarray, np.ndarray]:
    """Staged TTA on one batch.

    Args:
        run_views: ``(batch, views) -> (mean logits [N], view logits [N, V])``, e.g.
            :meth:`edgeleuk.runtime.base.Backend.run_views`.
        batch: uint8 images [N, H, W, 3].
        choice: Stage-1 views, margin and the threshold they were chosen at.

    Returns:
        ``(logits [N], went_on [N] bool)``: stage-1 means for stopped cells, the full
        R-rotation mean for those that went on to stage 2.
    """
    first = np.asarray(choice.views, np.int64)
    _, v1 = run_views(batch, first)
    v1 = np.asarray(v1, np.float32)
    stage1 = v1.mean(axis=1, dtype=np.float32)
    went_on = ~(np.abs(stage1.astype(np.float64) - threshold_logit(choice.threshold)) > choice.margin)
    logits = stage1.copy()
    if went_on.any():
        _, v2 = run_views(np.ascontiguousarray(batch[went_on]), np.asarray(choice.rest, np.int64))
        every = np.empty((int(went_on.sum()), choice.rotations), np.float32)
        every[:, first] = v1[went_on]
        every[:, list(choice.rest)] = v2
        logits[went_on] = every.mean(axis=1, dtype=np.float32)
    return logits, went_on


RunViewsExtras = Callable[[np.ndarray, np.ndarray, tuple[str, ...]],
                          tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]


def run_staged_extras(run_views: RunViewsExtras, batch: np.ndarray, choice: StageChoice,
                      names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """:func:`run_staged` that also returns the extra outputs ``names`` over the views each cell got.

    ``embedding`` is a mean over views, so a cell that went on gets the stage means weighted by
    their view counts. ``cam`` averages each pixel over the views that show it, which differs per
    pixel: a cell that went on is then computed on all rotations at once in stage 2 (its stage-2
    view logits are read from that call), so only heatmaps pay for it.

    Args:
        run_views: ``(batch, views, names) -> (mean logits, view logits, extras)``, e.g.
            :meth:`edgeleuk.runtime.base.Backend.run_views_extras`.
        batch: uint8 images [N, H, W, 3].
        choice: The stage choice.
        names: Extra outputs to return.

    Returns:
        ``(logits [N], went_on [N] bool, {name: array [N, ...]})``.
    """
    first = np.asarray(choice.views, np.int64)
    _, v1, extras = run_views(batch, first, names)
    v1 = np.asarray(v1, np.float32)
    extras = {k: np.array(v, np.float32) for k, v in extras.items()}
    stage1 = v1.mean(axis=1, dtype=np.float32)
    went_on = ~(np.abs(stage1.astype(np.float64) - threshold_logit(choice.threshold)) > choice.margin)
    logits = stage1.copy()
    if went_on.any():
        rest = list(choice.rest)
        second = np.arange(choice.rotations) if "cam" in names else np.asarray(rest, np.int64)
        _, v2, more = run_views(np.ascontiguousarray(batch[went_on]), second, names)
        v2 = np.asarray(v2, np.float32)
        every = np.empty((int(went_on.sum()), choice.rotations), np.float32)
        every[:, first] = v1[went_on]
        every[:, rest] = v2[:, rest] if "cam" in names else v2
        logits[went_on] = every.mean(axis=1, dtype=np.float32)
        for name, value in more.items():
            if "cam" in names:  # stage 2 computed every rotation: its extras are the full ones
                extras[name][went_on] = value
            else:  # a mean over views: weight each stage by its view count
                extras[name][went_on] = (len(first) * extras[name][went_on] + len(rest) * value) / choice.rotations
    return logits, went_on, extras


class StagedRunner:
    """A backend's ``run`` with staged TTA: ``(batch) -> (logits, probs)``, counting stage-2 cells.

    Thread-safe: the counts are updated under a lock; the backend serves concurrent calls.

    Args:
        run_views: The backend's ``run_views`` (opened with ``views_input``).
        choice: The model's stage choice.
    """

    def __init__(self, run_views: RunViews, choice: StageChoice) -> None:
        self.run_views, self.choice = run_views, choice
        self.counts = StagedCounts()
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, went_on = run_staged(self.run_views, batch, self.choice)
        self._count(len(batch), went_on)
        return logits, sigmoid(logits)

    def with_extras(self, run_views: RunViewsExtras, batch: np.ndarray,
                    names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """As calling it, plus the extra outputs ``names`` (:func:`run_staged_extras`)."""
        logits, went_on, extras = run_staged_extras(run_views, batch, self.choice, names)
        self._count(len(batch), went_on)
        return logits, sigmoid(logits), extras

    def _count(self, cells: int, went_on: np.ndarray) -> None:
        with self._lock:
            self.counts.cells += cells
            self.counts.stage2 += int(went_on.sum())

    def describe(self) -> str:
        return self.counts.describe(self.choice)


def check_mode(tta: str) -> str:
    """``tta`` if it names a TTA mode, else a :class:`UsageError`."""
    if tta not in TTA_MODES:
        raise UsageError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    return tta
