"""``edgeleuk calibrate``: set a model's threshold for a target sensitivity.

Runs the exported model on labelled validation cells (the C-NMC preliminary
test split when labelled, else the training folds), picks the threshold with
:func:`edgeleuk.workflow.threshold.select_threshold` and writes a copy of the
model whose metadata carries that threshold and where it came from. ``predict``,
``watch`` and the embedding API then use it by default.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.data import Record, discover
from edgeleuk.errors import DataError, UsageError
from edgeleuk.meta import ModelMeta
from edgeleuk.modelwrite import write_model_with_meta
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.modelfile import read_model_meta
from edgeleuk.workflow.threshold import OperatingPoint, operating_point, select_threshold

log = logging.getLogger(__name__)

#: Labelled splits tried in order: held-out patients first, training folds as a fallback.
CALIBRATION_SPLITS = ("prelim", "train")


@dataclass(frozen=True)
class CalibrationResult:
    """What ``calibrate`` chose and wrote.

    Attributes:
        out: The model file written.
        target: Requested sensitivity.
        chosen: Operating point at the calibrated threshold.
        previous: Operating point at the model's threshold before calibration.
        previous_source: Where that threshold came from (``default`` for a fresh export).
        split: Data split the scores came from.
        n_failed: Labelled files that could not be classified (left out).
        source: The ``threshold_source`` string stored in the model.
    """

    out: Path
    target: float
    chosen: OperatingPoint
    previous: OperatingPoint
    previous_source: str
    split: str
    n_failed: int
    source: str

    def describe(self) -> str:
        """The old and new operating points side by side, and where the model was written."""
        rows = [("calibrated", self.chosen), ("before", self.previous)]
        n_all, n_hem = self.chosen.tp + self.chosen.fn, self.chosen.tn + self.chosen.fp
        lines = [
            f"calibration on the {self.split} split: {n_all} ALL + {n_hem} HEM cells"
            + (f" ({self.n_failed} unreadable files left out)" if self.n_failed else ""),
            f"target: sensitivity >= {self.target:g} (ALL is positive)",
            "",
            f"{'threshold':<12}{'value':>10}{'sensitivity':>13}{'specificity':>13}{'weighted F1':>13}",
        ]
        for name, op in rows:
            lines.append(
                f"{name:<12}{op.threshold:>10.4f}{op.sensitivity:>13.4f}{op.specificity:>13.4f}"
                f"{op.weighted_f1:>13.4f}"
            )
        lines += [
            f"(before = the threshold the model carried until now: {self.previous_source})",
            "",
            f"wrote {self.out}",
            f"threshold source: {self.source}",
        ]
        return "\n".join(lines)


def load_labelled(data: Path) -> tuple[str, list[Record]]:
    """The first labelled split of ``data`` in :data:`CALIBRATION_SPLITS` order.

    Returns:
        ``(split name, records with a label)``.

    Raises:
        DataError: No split holds labelled cells, or only one class is present.
    """
    index = discover(Path(data))
    for name in CALIBRATION_SPLITS:
        try:
            records = [r for r in index.split(name) if r.label is not None]
        except DataError:
            continue
        if records:
            break
    else:
        raise DataError(
            f"{data}: no labelled cells found (looked for the {' and '.join(CALIBRATION_SPLITS)} splits); "
            "calibration needs the C-NMC layout with labels (training_data/ or prelim/ + prelim_labels.csv)"
        )
    classes = {r.label for r in records}
    if len(classes) < 2:
        only = "ALL" if classes == {1} else "HEM"
        raise DataError(
            f"{data} ({name} split): all {len(records)} labelled cells are {only}; calibration needs "
            "both ALL and HEM cells to trade sensitivity against specificity"
        )
    return name, records


def score_records(model: Path, records: list[Record], backend: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Run the model on labelled records.

    Returns:
        ``(probabilities, labels, number of files that failed)``; failed files are left out.
    """
    classifier = Classifier.load(model, backend=backend)
    predictions = classifier.predict_paths([r.path for r in records])
    scores, labels, failed = [], [], 0
    for record, pred in zip(records, predictions, strict=True):
        if pred.error is not None or pred.prob_all is None:
            log.warning("left out %s: %s", record.path, pred.error)
            failed += 1
            continue
        scores.append(float(pred.prob_all))
        labels.append(int(record.label))
    return np.asarray(scores, np.float64), np.asarray(labels, np.int64), failed


def _provenance(
    meta: ModelMeta, chosen: OperatingPoint, target: float, data: Path, split: str, failed: int
) -> tuple[str, dict[str, Any]]:
    """The ``threshold_source`` line and the ``extra["calibration"]`` record stored in the model."""
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    n_all, n_hem = chosen.tp + chosen.fn, chosen.tn + chosen.fp
    source = (
        f"calibrated: sensitivity>={target:g} on {data.resolve()} ({split} split), "
        f"n={n_all + n_hem} ({n_all} ALL, {n_hem} HEM), {today}"
    )
    record = {
        "target_sensitivity": target,
        "sensitivity": chosen.sensitivity,
        "specificity": chosen.specificity,
        "weighted_f1": chosen.weighted_f1,
        "previous_threshold": meta.threshold,
        "previous_threshold_source": meta.threshold_source,
        "data": str(data.resolve()),
        "split": split,
        "n_all": n_all,
        "n_hem": n_hem,
        "n_failed": failed,
        "date": today,
    }
    return source, record


def calibrate_model(
    model: Path, data: Path, sensitivity: float = 0.95, out: Path | None = None, backend: str = "auto"
) -> CalibrationResult:
    """Calibrate ``model``'s threshold on ``data`` and write the result to ``out``.

    Args:
        model: Exported ``.onnx`` or OpenVINO ``.xml`` model.
        data: Labelled validation data in a C-NMC layout.
        sensitivity: Target sensitivity for ALL in [0, 1].
        out: Model file to write (same suffix as ``model``); None overwrites ``model``.
        backend: Inference backend (``auto``, ``cpu``, ``cuda``, ``openvino``).

    Returns:
        The chosen and the previous operating point and where the model went.

    Raises:
        DataError: No labelled data, or only one class.
        UsageError: Bad target, model or output path.
    """
    if not 0.0 <= sensitivity <= 1.0:  # before minutes of inference
        raise UsageError(f"--sensitivity must lie in [0, 1], got {sensitivity}")
    model, data = Path(model), Path(data)
    out = Path(out) if out is not None else model
    meta, _ = read_model_meta(model)
    split, records = load_labelled(data)
    scores, labels, failed = score_records(model, records, backend)
    if labels.size == 0:
        raise DataError(
            f"{data}: none of the {len(records)} labelled files could be classified (see the log)"
        )
    chosen = select_threshold(scores, labels, sensitivity)  # also refuses one class left after failures
    if not 0.0 < chosen.threshold < 1.0:  # saturated scores: a model file may not carry such a threshold
        raise DataError(
            f"the threshold for sensitivity {sensitivity:g} would be {chosen.threshold!r}, outside (0, 1): "
            "the scores saturate at 0 or 1 on these data, so no threshold separates them; nothing was written"
        )
    previous = operating_point(scores, labels, meta.threshold)
    source, calibration = _provenance(meta, chosen, sensitivity, data, split, failed)
    new_meta = meta.replace(
        threshold=chosen.threshold, threshold_source=source, extra={**meta.extra, "calibration": calibration}
    )
    write_model_with_meta(model, out, new_meta)
    return CalibrationResult(
        out=out,
        target=sensitivity,
        chosen=chosen,
        previous=previous,
        previous_source=meta.threshold_source,
        split=split,
        n_failed=failed,
        source=source,
    )
