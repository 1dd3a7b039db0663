"""Score labelled cells with every rotation's logit, for ``calibrate``'s threshold and stage choice.

One pass of the model over the labelled cells gives, per cell, the file's own
mean logit and the R per-rotation logits: the threshold is chosen on the former
(:mod:`edgeleuk.workflow.threshold`), the staged-TTA subset and margin on the
latter (:func:`edgeleuk.runtime.staged.choose_stage`). A model exported before staged TTA
has no ``views`` entry: it is scored the plain way and gets no stage choice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.contract import EMBEDDING
from edgeleuk.core.errors import EdgeleukError
from edgeleuk.core.numerics import sigmoid
from edgeleuk.io.data import Record
from edgeleuk.runtime.base import Backend
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.pipeline import decoded_batches
from edgeleuk.runtime.staged import META_EXTRA_KEY, StageChoice, choose_stage
from edgeleuk.runtime.views import NoViewsEntry, all_views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """Labelled cells as the model scored them (cells that failed are left out).

    Attributes:
        probs: Probability of ALL per cell (the file's own full-TTA result).
        labels: 1 = ALL, 0 = HEM.
        view_logits: Every rotation's logit [cells, R]; None for a model without a views entry.
        failed: Labelled files that could not be classified.
        no_views: Why there are no view logits (None when there are).
        subjects: Subject id per scored cell (None unknown); empty when not tracked.
        embeddings: The graph's ``embedding`` per scored cell [cells, D]; None when the graph
            (exported before it) or the backend has none.
    """

    probs: np.ndarray
    labels: np.ndarray
    view_logits: np.ndarray | None
    failed: int
    no_views: str | None = None
    subjects: tuple[str | None, ...] = ()
    embeddings: np.ndarray | None = None


def _views_classifier(model: Path, backend: str, fields: Mapping[str, Any]) -> tuple[Classifier | None, str]:
    """The model opened for single rotations, or None and why not."""
    try:
        clf = Classifier.load(model, backend=backend, views_input=True, **fields)
    except NoViewsEntry as exc:
        log.warning("%s", exc)
        return None, "the model has no views entry (exported before staged TTA)"
    if type(clf.backend).run_views is Backend.run_views:  # e.g. remote: the server answers full TTA only
        why = f"the {clf.backend.name} backend computes no single rotations"
        log.warning("%s: calibrating the threshold only", why)
        return None, why
    return clf, ""


def _score_loop(clf: Classifier, records: list[Record], views: np.ndarray | None) -> Scores:
    """Score every record on ``clf`` (with every rotation's logit when ``views`` is given), embeddings too.

    The graph's ``embedding`` (when the backend opened it) is kept per cell for ``calibrate``'s
    OOD model. Cells with a non-finite logit are left out and counted as failed.
    """
    names = (EMBEDDING,) if EMBEDDING in getattr(clf.backend, "extras", ()) else ()
    logits, probs, view_logits, embeddings, labels, subjects, failed = [], [], [], [], [], [], 0
    label_of = {str(r.path): int(r.label) for r in records}
    subject_of = {str(r.path): r.subject for r in records}
    for batch in decoded_batches((r.path for r in records), clf.input_size, clf.batch_size, workers=clf.workers):
        good = [(path, d) for path, d in batch if d.ok]
        failed += len(batch) - len(good)
        for path, d in batch:
            if not d.ok:
                log.warning("left out %s: %s", path, d.error)
        if not good:
            continue
        stack = np.stack([d.image for _, d in good])
        try:
            if views is None:
                lo, pr, extras = clf.backend.run_extras(stack, names)
            else:
                lo, vl, extras = clf.backend.run_views_extras(stack, views, names)
                pr = sigmoid(np.asarray(lo).reshape(-1))
                view_logits.append(vl)
        except Exception as exc:  # an engine fault stops the job: the choice needs every cell
            raise EdgeleukError(f"inference failed while scoring the labelled cells: {exc}") from exc
        logits.append(np.asarray(lo).reshape(-1))
        probs.append(np.asarray(pr, np.float64).reshape(-1))
        if names:
            embeddings.append(np.asarray(extras[EMBEDDING], np.float32).reshape(len(good), -1))
        labels += [label_of[str(path)] for path, _ in good]
        subjects += [subject_of[str(path)] for path, _ in good]
    if not labels:
        return Scores(np.zeros(0), np.zeros(0, np.int64), None, failed)
    lo_all = np.concatenate(logits)
    finite = np.isfinite(lo_all)
    if embeddings:  # a non-finite embedding leaves its cell out like a non-finite logit
        finite &= np.isfinite(np.concatenate(embeddings)).all(axis=1)
    return Scores(
        np.concatenate(probs)[finite], np.asarray(labels, np.int64)[finite],
        np.concatenate(view_logits)[finite] if view_logits else None, failed + int((~finite).sum()),
        subjects=tuple(s for s, keep in zip(subjects, finite, strict=True) if keep),
        embeddings=np.concatenate(embeddings)[finite] if embeddings else None,
    )


def _score_plain(model: Path, records: list[Record], backend: str, fields: Mapping[str, Any], why: str) -> Scores:
    """Probabilities only, from the file's own call (a model without a views entry, or a backend without views)."""
    classifier = Classifier.load(model, backend=backend, **fields)
    if EMBEDDING in getattr(classifier.backend, "extras", ()):  # e.g. remote: the server returns embeddings
        return dataclasses.replace(_score_loop(classifier, records, None), no_views=why)
    predictions = classifier.predict_paths([r.path for r in records])
    probs, labels, subjects, failed = [], [], [], 0
    for record, pred in zip(records, predictions, strict=True):
        if pred.error is not None or pred.prob_all is None:
            log.warning("left out %s: %s", record.path, pred.error)
            failed += 1
            continue
        probs.append(float(pred.prob_all))
        labels.append(int(record.label))
        subjects.append(record.subject)
    return Scores(np.asarray(probs, np.float64), np.asarray(labels, np.int64), None, failed, no_views=why,
                  subjects=tuple(subjects))


def score_labelled(model: Path, records: list[Record], backend: str,
                   engine_fields: Mapping[str, Any] | None = None) -> Scores:
    """Run ``model`` once over labelled ``records``: probabilities, and view logits when it can.

    Args:
        model: Exported model.
        records: Labelled cells.
        backend: ``auto`` or a registered backend.
        engine_fields: Backend option fields by name (``server=...``, ``precision=...``), as
            :meth:`Classifier.load` takes them.

    Raises:
        EdgeleukError: The engine failed mid-way.
    """
    fields = dict(engine_fields or {})
    clf, why = _views_classifier(model, backend, fields)
    if clf is None:
        return _score_plain(model, records, backend, fields, why)
    return _score_loop(clf, records, all_views(clf.meta.preprocess.rotations))


def stage_extra(extra: dict[str, Any], choice: StageChoice | None) -> dict[str, Any]:
    """``extra`` with the stage choice replaced (or removed: an old one holds only at its own threshold)."""
    kept = {k: v for k, v in extra.items() if k != META_EXTRA_KEY}
    return kept if choice is None else {**kept, META_EXTRA_KEY: choice.to_dict()}


def choose_for(scores: Scores, threshold: float, agreement: float, data: str) -> tuple[StageChoice | None, str]:
    """The stage choice at ``threshold`` on ``scores``, and one line saying what happened."""
    if scores.view_logits is None:
        return None, f"staged TTA: no stage choice ({scores.no_views})"
    choice = choose_stage(scores.view_logits, scores.labels, threshold, agreement, data=data)
    if choice is None:
        return None, (f"staged TTA: no rotation subset stops any cell with agreement >= {100 * agreement:.2f} % "
                      "and no loss of sensitivity on these cells; no stage choice stored (use --tta full)")
    return choice, choice.describe()
