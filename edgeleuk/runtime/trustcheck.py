"""What a :class:`~edgeleuk.runtime.classifier.Classifier` adds to each call: QC reasons, OOD score, heatmap.

* **QC** (:func:`edgeleuk.quality.assess`) on every decoded image, against the ranges in the
  model's metadata (``ModelMeta.quality``) or the documented defaults
  (:data:`edgeleuk.core.trust.DEFAULT_QUALITY`) for a model that carries none;
* **OOD** (:func:`edgeleuk.quality.ood_scores`) from the graph's ``embedding`` output, scored
  with the model file's own :class:`~edgeleuk.core.trust.OodModel` (``ModelMeta.ood``, fitted by
  ``calibrate``); the flag is a score above its threshold;
* **heatmaps**: the graph's ``cam`` output, only when asked for (it costs a gather per pixel).

What is unavailable (no OOD model, a graph exported before the extra outputs) is said once, in
:attr:`TrustChecks.note`. The engine's extras must be finite: anything else is an engine fault,
never a row. Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from edgeleuk import quality
from edgeleuk.core.contract import CAM, EMBEDDING
from edgeleuk.core.errors import EngineFault
from edgeleuk.core.meta import ModelMeta
from edgeleuk.core.trust import DEFAULT_QUALITY

log = logging.getLogger(__name__)

_REEXPORT = "export the model again with `edgeleuk export`, then `edgeleuk calibrate` it"


def wanted_extras(heatmaps: bool) -> tuple[str, ...]:
    """The extra outputs a classifier opens: the embedding (its cost is nil), the map only for heatmaps."""
    return (EMBEDDING, CAM) if heatmaps else (EMBEDDING,)


class TrustChecks:
    """QC, OOD and heatmaps for one loaded model: what is computed, and why something is not.

    Args:
        meta: The model's metadata (quality ranges, OOD model).
        opened: The extra outputs the backend opened and the graph has.
        qc: Run the input quality checks.
        heatmaps: Fetch the class activation map.
    """

    def __init__(self, meta: ModelMeta, opened: Sequence[str], *, qc: bool = True, heatmaps: bool = False) -> None:
        self.meta = meta
        self.pre = meta.preprocess
        self.qc = qc
        self.ranges = meta.quality if meta.quality is not None else DEFAULT_QUALITY
        self.ood = meta.ood if EMBEDDING in opened else None
        self.heatmaps = heatmaps and CAM in opened
        self.fetch = tuple(n for n in (EMBEDDING, CAM) if (n == EMBEDDING and self.ood is not None)
                           or (n == CAM and self.heatmaps))
        notes, lacks = [], []  # lacks: what the graph itself is missing (a warning, not a setting)
        if qc and meta.quality is None:
            notes.append("quality checks use the documented default ranges: this model carries none "
                         "(`edgeleuk calibrate` fits them on its cells)")
        if meta.ood is None:
            notes.append("no OOD score: this model carries no OOD model (`edgeleuk calibrate` fits one)")
        elif EMBEDDING not in opened:
            lacks.append(f"no OOD score: the graph has no '{EMBEDDING}' output (exported before it existed); "
                         + _REEXPORT)
        if heatmaps and CAM not in opened:
            lacks.append(f"no heatmaps: the graph has no '{CAM}' output (exported before it existed); " + _REEXPORT)
        #: What is unavailable or defaulted, one sentence each (said once, at load); empty when all is there.
        self.note = "; ".join(notes + lacks)
        if lacks:
            log.warning("%s", "; ".join(lacks))
        if notes:
            log.info("%s", "; ".join(notes))

    def reasons(self, image: np.ndarray) -> tuple[str, ...]:
        """QC reasons for one decoded uint8 RGB image (empty: ok, or QC off)."""
        return quality.assess(image, self.ranges, self.pre) if self.qc else ()

    def check(self, engine: str, extras: dict[str, np.ndarray], names: Sequence[str], n: int) -> None:
        """Refuse a call's extras that are missing, mis-shaped or not finite: the engine's fault.

        Raises:
            EngineFault: An extra output missing, of the wrong shape, or not finite.
        """
        shapes = {EMBEDDING: (n, -1), CAM: (n, self.pre.crop, self.pre.crop)}
        for name in names:
            value = extras.get(name)
            want = shapes[name]
            if (value is None or value.ndim != len(want)
                    or any(w not in (-1, g) for w, g in zip(want, value.shape, strict=True))):
                got = "nothing" if value is None else f"shape {list(value.shape)}"
                raise EngineFault(f"the {engine} engine returned {got} for '{name}' on a batch of {n}")
            bad = ~np.isfinite(value.reshape(n, -1)).all(axis=1)
            if bad.any():
                raise EngineFault(
                    f"the {engine} engine returned a non-finite '{name}' for {int(bad.sum())} of {n} cell(s): "
                    "the model file's weights or the engine are broken, not the images"
                )

    def scores(self, extras: dict[str, np.ndarray]) -> np.ndarray | None:
        """OOD scores from a call's (checked) embedding, with the model's own OOD model; None without one."""
        if self.ood is None:
            return None
        embedding = extras[EMBEDDING]
        return quality.ood_scores(self.ood, embedding.reshape(len(embedding), -1))

    def flag(self, score: float | None) -> bool:
        """Whether an OOD score lies beyond the calibrated threshold."""
        return score is not None and self.ood is not None and score > self.ood.threshold
