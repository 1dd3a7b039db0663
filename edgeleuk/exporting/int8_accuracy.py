"""Accuracy-controlled INT8: NNCF keeps in float the layers that cost weighted F1.

``nncf.quantize_with_accuracy_control`` quantizes the whole network, measures a
metric on labelled validation cells, and if the quantized model is more than
``max_drop`` below the float one it returns layer groups to float, most harmful
first, until it is within reach. Our metric is the weighted F1 of
:func:`edgeleuk.evaluation.metrics.binary_metrics`, floored by label agreement with the
PyTorch reference::

    metric = min(F1, F1_ref - max_f1_drop * (1 - agreement) / (1 - min_agreement))

The float model scores ``F1_ref`` (it agrees with the reference on every cell),
so with ``max_drop = max_f1_drop`` a quantized model is accepted exactly when it
meets both parity-gate thresholds on these cells: F1 drop <= ``max_f1_drop``
and agreement >= ``min_agreement``. F1 alone is blind to cells flipping both
ways (measured on the demo model: F1 0.747 -> 0.762 while 3 of 200 cells flipped,
which the gate refuses).

The validation cells are the labelled gate cells (up to ``accuracy_control_n``),
so the reference's outputs are computed once for both; the gate's numbers on
those cells are then in-sample, and the model file says so. NNCF ranks layer
groups on ``accuracy_control_rank_n`` cells chosen by their per-cell value:
1 if the cell keeps the reference's label, plus a tenth of the probability given
to that label, so cells that flipped come first, then those that moved most.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeleuk.evaluation.metrics import binary_metrics
from edgeleuk.exporting.gate import ReferenceOutputs
from edgeleuk.exporting.imagesets import ImageSet
from edgeleuk.exporting.profile import ExportProfile
from edgeleuk.io.data import spread_indices

log = logging.getLogger(__name__)
BATCH = 8  # images per inference call; the compiled model has a dynamic batch axis
# F1 differences carry float rounding (a drop of exactly 0.005 arrives as 0.0050000000000000044);
# the gate compares numbers rounded to 6 digits, so NNCF gets the same slack.
DROP_TOLERANCE = 1e-9


@dataclass
class F1Validator:
    """NNCF's ``validation_fn``: the floored weighted F1 of a compiled model on gate cells.

    NNCF's data items are indices into the gate set, so the labels and the
    reference's calls of exactly the cells it asks about are at hand.

    Attributes:
        images: Gate cells, uint8 [N, H, W, 3].
        labels: Their labels.
        ref: The reference's outputs on them.
        max_f1_drop: The gate's F1 threshold.
        min_agreement: The gate's agreement threshold (below 1).
        calls: One ``(cells, metric, f1, agreement)`` per call, in order, for the record.
    """

    images: np.ndarray
    labels: np.ndarray
    ref: ReferenceOutputs
    max_f1_drop: float
    min_agreement: float
    calls: list[tuple[int, float, float, float]] = field(default_factory=list)

    def _probs(self, compiled: Any, idx: np.ndarray) -> np.ndarray:
        chunks = [compiled(self.images[idx[i : i + BATCH]])["prob"] for i in range(0, len(idx), BATCH)]
        return np.concatenate(chunks).astype(np.float64)

    def score(self, probs: np.ndarray, idx: np.ndarray) -> tuple[float, float, float]:
        """``(metric, f1, agreement)`` of probabilities for the cells ``idx``."""
        thr = self.ref.threshold
        if not np.isfinite(probs).all():  # a broken model scores below any real one
            return -1.0, 0.0, 0.0
        f1 = binary_metrics(self.labels[idx], probs, thr)["f1"]
        f1_ref = binary_metrics(self.labels[idx], self.ref.probs[idx], thr)["f1"]
        agreement = float(np.mean((probs >= thr) == (self.ref.labels[idx] == 1)))
        floor = f1_ref - self.max_f1_drop * (1.0 - agreement) / (1.0 - self.min_agreement)
        return min(f1, floor), f1, agreement

    def __call__(self, compiled: Any, items: Any) -> tuple[float, list[float]]:
        """Score ``compiled`` on the cells ``items``; also per-cell values for NNCF's ranking."""
        idx = np.fromiter(items, dtype=np.int64)
        probs = self._probs(compiled, idx)
        metric, f1, agreement = self.score(probs, idx)
        self.calls.append((len(idx), metric, f1, agreement))
        kept = (probs >= self.ref.threshold) == (self.ref.labels[idx] == 1)
        per_cell = kept + 0.1 * np.where(self.ref.labels[idx] == 1, probs, 1.0 - probs)
        return metric, np.nan_to_num(per_cell, nan=0.0).tolist()

    def full_calls(self, n: int) -> list[dict[str, float]]:
        """The calls that scored all ``n`` validation cells: float model, fully INT8, then each restoration.

        NNCF's first call only probes the return type (on one cell) and is skipped.
        """
        return [{"metric": round(m, 6), "f1": round(f, 6), "agreement": round(a, 6)}
                for cells, m, f, a in self.calls[1:] if cells == n]


def quantize_with_f1_control(model: Any, quant_dataset: Any, quant_n: int, gate: ImageSet,
                             ref: ReferenceOutputs, profile: ExportProfile,
                             ignored_scope: Any = None) -> tuple[Any, dict[str, Any]]:
    """Run ``nncf.quantize_with_accuracy_control`` with the floored weighted F1.

    Args:
        model: Float ``openvino.Model``.
        quant_dataset: ``nncf.Dataset`` of INT8 calibration images.
        quant_n: Number of those images (all are used for statistics).
        gate: Labelled gate cells.
        ref: The PyTorch reference's outputs on ``gate``.
        profile: Thresholds, preset and accuracy-control limits.
        ignored_scope: Layers NNCF leaves in float (``nncf.IgnoredScope``).

    Returns:
        The quantized model and the record of what accuracy control measured.
    """
    import nncf  # lazy: see edgeleuk.exporting.int8._import_nncf

    idx = spread_indices(len(gate), profile.accuracy_control_n)
    validator = F1Validator(gate.images, gate.labels, ref, profile.max_f1_drop, profile.min_agreement)
    validation = nncf.Dataset([int(i) for i in idx], lambda i: gate.images[i : i + 1])
    restorer = nncf.AdvancedAccuracyRestorerParameters(
        max_num_iterations=profile.accuracy_control_max_reverts,
        ranking_subset_size=min(profile.accuracy_control_rank_n, len(idx)), num_ranking_workers=1)
    log.info("NNCF: accuracy control on %d labelled gate cells (max F1 drop %g)", len(idx), profile.max_f1_drop)
    quantized = nncf.quantize_with_accuracy_control(
        model, quant_dataset, validation, validator, max_drop=profile.max_f1_drop + DROP_TOLERANCE,
        drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset(profile.int8_preset),
        target_device=nncf.TargetDevice.CPU, subset_size=quant_n, advanced_accuracy_restorer_parameters=restorer,
        ignored_scope=ignored_scope)
    return quantized, _record(validator, len(idx), gate, profile)


def _record(validator: F1Validator, n: int, gate: ImageSet, profile: ExportProfile) -> dict[str, Any]:
    full = validator.full_calls(n)
    if len(full) < 2:  # not how NNCF 3.x validates; record it rather than guess
        flt = quant = None
        restoration = f"unknown: NNCF scored all cells {len(full)} time(s)"
    else:
        flt, quant = full[0], full[1]
        needed = flt["metric"] - quant["metric"] > profile.max_f1_drop + DROP_TOLERANCE
        restoration = (f"{len(full) - 2} layer group(s) tried back in float (best kept)" if needed
                       else "nothing returned to float (within max_f1_drop)")
    return {
        "method": "nncf.quantize_with_accuracy_control",
        "accuracy_control": "on",
        "metric": "weighted F1, floored by label agreement with the PyTorch reference",
        "validation": f"{n} labelled gate cells ({gate.source}); the gate's numbers on them are in-sample",
        "validation_cells": n,
        "max_drop": profile.max_f1_drop,
        "float": flt,
        "fully_quantized": quant,
        "restoration": restoration,
    }
