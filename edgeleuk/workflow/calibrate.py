"""``edgeleuk calibrate``: set a model's threshold for a target sensitivity.

Runs the exported model on labelled validation cells (the C-NMC preliminary
test split when labelled, else the training folds), picks the threshold with
:func:`edgeleuk.workflow.threshold.select_threshold` and writes a copy of the
model whose metadata carries that threshold and where it came from. ``predict``,
``watch`` and the embedding API then use it by default.

A threshold is only as good as the cells behind it: ``calibrate`` states the
sensitivity and specificity with exact (Clopper-Pearson) 95 % intervals and the
cells and subjects per class, stores them in the model, refuses a threshold whose
sensitivity or specificity is 0 (exit 1, nothing written) and runs on fewer than
:data:`MIN_CELLS` cells or :data:`MIN_SUBJECTS` subjects of a class only when asked
(``--allow-small``).

It also fits what a call is trusted against: the accepted range of each input
quality measure (:func:`edgeleuk.quality.fit_ranges`, robust percentiles of the calibration
cells) and an OOD model of the graph's ``embedding`` (:func:`edgeleuk.quality.fit_ood`, its
flag threshold a percentile of the calibration cells' own scores), both stored in the
metadata (``ModelMeta.quality``, ``ModelMeta.ood``) in the same all-or-nothing rewrite.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeleuk import quality
from edgeleuk.core.errors import CalibrationRefused, DataError, UsageError
from edgeleuk.core.meta import CALIBRATION_KEY, ModelMeta
from edgeleuk.core.trust import OodModel, QualityRanges, ood_summary, quality_summary
from edgeleuk.io.data import Record, discover
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.io.modelwrite import write_model_with_meta
from edgeleuk.runtime.pipeline import decoded_batches
from edgeleuk.runtime.staged import DEFAULT_AGREEMENT, StageChoice
from edgeleuk.workflow.stagecal import Scores, choose_for, score_labelled, stage_extra
from edgeleuk.workflow.threshold import CONFIDENCE, OperatingPoint, operating_point, select_threshold

log = logging.getLogger(__name__)

#: Labelled splits tried in order: held-out patients first, training folds as a fallback.
CALIBRATION_SPLITS = ("prelim", "train")
#: Below these per class (cells, subjects) calibration runs only with ``--allow-small``: cells of one
#: subject are alike, so a handful of subjects pins a threshold down far less than the cell count suggests.
MIN_CELLS = 30
MIN_SUBJECTS = 5
_CLASS = {1: "all", 0: "hem"}


@dataclass(frozen=True)
class SampleSize:
    """Cells and subjects per class (``all``, ``hem``) in the calibration data."""

    cells: dict[str, int]
    subjects: dict[str, int]

    @classmethod
    def of(cls, labels: Sequence[int], subjects: Sequence[str | None]) -> SampleSize:
        """Count cells and distinct known subjects per class."""
        cells = Counter(_CLASS[int(y)] for y in labels)
        known = {(_CLASS[int(y)], s) for y, s in zip(labels, subjects, strict=True) if s is not None}
        return cls(cells={c: cells.get(c, 0) for c in ("all", "hem")},
                   subjects={c: sum(1 for k, _ in known if k == c) for c in ("all", "hem")})

    def shortfalls(self) -> list[str]:
        """What falls below :data:`MIN_CELLS` / :data:`MIN_SUBJECTS`, one phrase each."""
        out = []
        for c in ("all", "hem"):
            if self.cells[c] < MIN_CELLS:
                out.append(f"{self.cells[c]} {c.upper()} cells (fewer than {MIN_CELLS})")
            if self.subjects[c] < MIN_SUBJECTS:
                out.append(f"{self.subjects[c]} {c.upper()} subjects (fewer than {MIN_SUBJECTS})")
        return out


def check_sample(size: SampleSize, allow_small: bool, where: str, warn: bool = True) -> str:
    """Refuse a sample below the floor unless ``allow_small``; the warning line when it is allowed (logged if ``warn``).

    Raises:
        DataError: Too few cells or subjects of a class and ``allow_small`` is False (exit 2).
    """
    short = size.shortfalls()
    if not short:
        return ""
    text = f"{where}: only {', '.join(short)}"
    if not allow_small:
        raise DataError(f"{text}: a threshold from so few is barely pinned down; use more labelled data, or "
                        "add --allow-small to calibrate anyway (the intervals then show how wide it is)")
    if warn:
        log.warning("%s; calibrating anyway (--allow-small)", text)
    return f"SMALL SAMPLE (--allow-small): {', '.join(short)}; read the intervals"


@dataclass(frozen=True)
class CalibrationResult:
    """What ``calibrate`` chose and wrote.

    Attributes:
        out: The model file written.
        target: Requested sensitivity (None: the threshold was kept).
        chosen: Operating point at the calibrated threshold.
        previous: Operating point at the model's threshold before calibration.
        previous_source: Where that threshold came from (``default`` for a fresh export).
        split: Data split the scores came from.
        n_failed: Labelled files that could not be classified (left out).
        source: The ``threshold_source`` string stored in the model.
        stage: The staged-TTA choice stored in the model, or None.
        stage_note: What the stage choice found (or why there is none).
        sample: Cells and subjects per class.
        small_note: The small-sample warning, when ``--allow-small`` let one through.
        quality: The quality ranges fitted and stored (None: not fitted, see ``trust_note``).
        ood: The OOD model fitted and stored (None: not fitted, see ``trust_note``).
        trust_note: What was fitted for QC and OOD, or why not.
    """

    out: Path
    target: float | None
    chosen: OperatingPoint
    previous: OperatingPoint
    previous_source: str
    split: str
    n_failed: int
    source: str
    stage: StageChoice | None = None
    stage_note: str = ""
    sample: SampleSize | None = None
    small_note: str = ""
    quality: QualityRanges | None = None
    ood: OodModel | None = None
    trust_note: str = ""

    def describe(self) -> str:
        """The old and new operating points side by side, and where the model was written."""
        rows = [("calibrated" if self.target is not None else "kept", self.chosen), ("before", self.previous)]
        n_all, n_hem = self.chosen.tp + self.chosen.fn, self.chosen.tn + self.chosen.fp
        lines = [
            f"calibration on the {self.split} split: {n_all} ALL + {n_hem} HEM cells"
            + (f" ({self.n_failed} unreadable files left out)" if self.n_failed else ""),
            (f"target: sensitivity >= {self.target:g} (ALL is positive)" if self.target is not None
             else "threshold kept as it was (--keep-threshold)"),
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
            f"at {self.chosen.threshold:.4f}, exact (Clopper-Pearson) {100 * CONFIDENCE:g}% intervals:",
            f"  sensitivity {_with_ci(self.chosen.sensitivity, self.chosen.sensitivity_ci)} "
            f"({self.chosen.tp} of {n_all} ALL cells called ALL)",
            f"  specificity {_with_ci(self.chosen.specificity, self.chosen.specificity_ci)} "
            f"({self.chosen.tn} of {n_hem} HEM cells called HEM)",
        ]
        if self.sample is not None:
            lines.append(f"  subjects: {self.sample.subjects['all']} ALL, {self.sample.subjects['hem']} HEM")
        if self.small_note:
            lines.append(self.small_note)
        lines += [
            "",
            f"wrote {self.out}",
            f"threshold source: {self.source}",
            self.stage_note,
            self.trust_note,
        ]
        return "\n".join(line for line in lines if line is not None)


def _with_ci(value: float, ci: tuple[float, float] | None) -> str:
    return f"{value:.4f}" if ci is None else f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


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


def _subjects(scores: Scores) -> tuple[str | None, ...]:
    """Subject per scored cell; all unknown when the scorer did not track them."""
    return scores.subjects if len(scores.subjects) == scores.labels.size else (None,) * scores.labels.size


def _per_subject(scores: Scores, threshold: float) -> dict[str, dict[str, Any]]:
    """Cells, class and calls per subject (cells of unknown subject under ``(unknown)``)."""
    out: dict[str, dict[str, Any]] = {}
    for prob, label, subject in zip(scores.probs, scores.labels, _subjects(scores), strict=True):
        entry = out.setdefault(subject or "(unknown)", {"class": _CLASS[int(label)], "cells": 0, "called_all": 0})
        entry["cells"] += 1
        entry["called_all"] += int(prob >= threshold)
    return dict(sorted(out.items()))


def _provenance(
    meta: ModelMeta, chosen: OperatingPoint, target: float, data: Path, split: str, scores: Scores,
    small: bool,
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
        "n_failed": scores.failed,
        "date": today,
        "confidence": CONFIDENCE,
        "sensitivity_ci": list(chosen.sensitivity_ci),
        "specificity_ci": list(chosen.specificity_ci),
        "counts": {"tp": chosen.tp, "fn": chosen.fn, "tn": chosen.tn, "fp": chosen.fp},
        "subjects": dict(SampleSize.of(scores.labels, _subjects(scores)).subjects),
        "per_subject": _per_subject(scores, chosen.threshold),
        "small_sample": small,
    }
    return source, record


def calibrate_model(
    model: Path, data: Path, sensitivity: float | None = 0.95, out: Path | None = None, backend: str = "auto",
    staged_agreement: float | None = None, engine_fields: Mapping[str, Any] | None = None,
    allow_small: bool = False,
) -> CalibrationResult:
    """Calibrate ``model``'s threshold and staged-TTA choice on ``data``; write the result to ``out``.

    One pass over the labelled cells gives each cell's full-TTA probability and every
    rotation's logit: the threshold comes from the former, then the stage choice
    (:func:`edgeleuk.runtime.staged.choose_stage`) at that threshold from the latter.

    Args:
        model: Exported ``.onnx`` or OpenVINO ``.xml`` model.
        data: Labelled validation data in a C-NMC layout.
        sensitivity: Target sensitivity for ALL in [0, 1]; None keeps the model's threshold
            (and only chooses the stages).
        out: Model file to write (same suffix as ``model``); None overwrites ``model``.
        backend: Inference backend (``auto``, ``cpu``, ``cuda``, ``openvino``).
        staged_agreement: Bound on the agreement of cells that stop after stage 1 with full TTA;
            None takes :data:`edgeleuk.runtime.staged.DEFAULT_AGREEMENT`.
        engine_fields: Backend option fields by name (``server``, ``precision``...), passed on to
            the backend (``--backend remote --server URL`` scores on an ``edgeleuk serve`` server;
            it computes no single rotations, so no stage choice is made there).
        allow_small: Run on fewer than :data:`MIN_CELLS` cells or :data:`MIN_SUBJECTS` subjects of a
            class (said in the output and stored in the model).

    Returns:
        The chosen and the previous operating point, the stage choice and where the model went.

    Raises:
        DataError: No labelled data, only one class, or a small sample without ``allow_small``.
        UsageError: Bad target, model or output path.
        CalibrationRefused: The chosen threshold has sensitivity or specificity 0; nothing is written.
    """
    if sensitivity is not None and not 0.0 <= sensitivity <= 1.0:  # before minutes of inference
        raise UsageError(f"--sensitivity must lie in [0, 1], got {sensitivity}")
    staged_agreement = DEFAULT_AGREEMENT if staged_agreement is None else staged_agreement
    if not 0.0 < staged_agreement <= 1.0:
        raise UsageError(f"--staged-agreement must lie in (0, 1], got {staged_agreement}")
    model, data = Path(model), Path(data)
    out = Path(out) if out is not None else model
    meta, _ = read_model_meta(model)
    split, records = load_labelled(data)
    where = f"{data} ({split} split)"
    # Checked on the files before minutes of inference, and again on the cells that could be scored.
    check_sample(SampleSize.of([r.label for r in records], [r.subject for r in records]), allow_small, where,
                 warn=False)
    scores = score_labelled(model, records, backend, engine_fields)
    if scores.labels.size == 0:
        raise DataError(
            f"{data}: none of the {len(records)} labelled files could be classified (see the log)"
        )
    sample = SampleSize.of(scores.labels, _subjects(scores))
    small_note = check_sample(sample, allow_small, where)
    previous = operating_point(scores.probs, scores.labels, meta.threshold)
    if sensitivity is None:
        chosen, source, extra = previous, meta.threshold_source, dict(meta.extra)
    else:  # select_threshold also refuses one class left after failures
        chosen = select_threshold(scores.probs, scores.labels, sensitivity)
        if not 0.0 < chosen.threshold < 1.0:  # saturated scores: a model file may not carry such a threshold
            raise DataError(
                f"the threshold for sensitivity {sensitivity:g} would be {chosen.threshold!r}, outside (0, 1): "
                "the scores saturate at 0 or 1 on these data, so no threshold separates them; nothing was written"
            )
        _refuse_degenerate(chosen, sensitivity)
        source, calibration = _provenance(meta, chosen, sensitivity, data, split, scores, bool(small_note))
        extra = {**meta.extra, CALIBRATION_KEY: calibration}
    stage, note = choose_for(scores, chosen.threshold, staged_agreement, f"{data.resolve()} ({split} split)")
    ranges, ood, trust_note = fit_trust(records, scores, meta)
    new_meta = meta.replace(threshold=chosen.threshold, threshold_source=source, extra=stage_extra(extra, stage),
                            quality=ranges, ood=ood)
    write_model_with_meta(model, out, new_meta)
    return CalibrationResult(
        out=out,
        target=sensitivity,
        chosen=chosen,
        previous=previous,
        previous_source=meta.threshold_source,
        split=split,
        n_failed=scores.failed,
        source=source,
        stage=stage,
        stage_note=note,
        sample=sample,
        small_note=small_note,
        quality=ranges,
        ood=ood,
        trust_note=trust_note,
    )


def _good_images(records: Sequence[Record], size: int) -> Iterator[Any]:
    """The decoded calibration cells, read again one batch at a time (never all in memory)."""
    for batch in decoded_batches((r.path for r in records), size, 16):
        yield from (d.image for _, d in batch if d.ok)


def fit_trust(records: Sequence[Record], scores: Scores,
              meta: ModelMeta) -> tuple[QualityRanges | None, OodModel | None, str]:
    """Quality ranges from the calibration cells' pixels and the OOD model from their embeddings.

    Either is kept as the model had it (and said so) when it cannot be fitted: too few usable
    cells, or no embedding (a graph exported before it, a backend that returns none).

    Returns:
        ``(quality ranges, OOD model, one line per fit saying what happened)``.
    """
    lines = []
    try:
        ranges = quality.fit_ranges(_good_images(records, meta.preprocess.input_size), meta.preprocess,
                                    how="calibrate")
        lines.append(f"quality ranges fitted: {quality_summary(ranges)}")
    except UsageError as exc:
        ranges = meta.quality
        lines.append(f"quality ranges not fitted ({exc}); kept: {quality_summary(ranges)}")
    if scores.embeddings is None:
        ood = meta.ood
        lines.append("OOD model not fitted: the graph or backend gives no embedding (export the model again); "
                     f"kept: {ood_summary(ood)}")
    else:
        try:
            ood = quality.fit_ood(scores.embeddings)
            lines.append(f"OOD model fitted: {ood_summary(ood)}")
        except UsageError as exc:
            ood = meta.ood
            lines.append(f"OOD model not fitted ({exc}); kept: {ood_summary(ood)}")
    return ranges, ood, "\n".join(lines)


def _refuse_degenerate(chosen: OperatingPoint, target: float) -> None:
    """A threshold that calls every cell one class is no classifier: refuse it (exit 1)."""
    if chosen.sensitivity > 0 and chosen.specificity > 0:
        return
    what = "sensitivity" if chosen.sensitivity == 0 else "specificity"
    calls = "HEM" if what == "sensitivity" else "ALL"
    raise CalibrationRefused(
        f"the threshold for sensitivity {target:g} would be {chosen.threshold:.4f} with {what} 0 "
        f"(sensitivity {chosen.sensitivity:.3f} {_ci(chosen.sensitivity_ci)}, specificity "
        f"{chosen.specificity:.3f} {_ci(chosen.specificity_ci)}): it calls every "
        f"{'ALL' if calls == 'HEM' else 'HEM'} cell {calls}. Nothing was written; choose another "
        "--sensitivity, or calibrate on more (or better separated) labelled cells"
    )


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{100 * CONFIDENCE:g}% CI {ci[0]:.3f}-{ci[1]:.3f}]"
