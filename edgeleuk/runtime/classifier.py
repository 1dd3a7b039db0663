"""The Python embedding API: load an exported model once, classify files or arrays.

Example::

    from edgeleuk import Classifier

    clf = Classifier.load("model.onnx", backend="auto")
    for p in clf.predict_paths(["1.bmp", "2.bmp"]):
        print(p.path, p.status, p.prob_all, p.label)

No torch is imported. The preprocessing contract (450x450 uint8 RGB in) and
the decision threshold come from the model file's metadata.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.contract import CAM, EMBEDDING, check_input, graph_problems
from edgeleuk.core.errors import EdgeleukError, EngineFault, UsageError
from edgeleuk.io.data import subject_from_name
from edgeleuk.io.imageio import Decoded
from edgeleuk.io.modelfile import parse_metadata
from edgeleuk.runtime.base import Backend, BackendInfo, ExtrasResult
from edgeleuk.runtime.pipeline import decoded_batches
from edgeleuk.runtime.registry import backend_options as build_options
from edgeleuk.runtime.registry import choose_backend
from edgeleuk.runtime.staged import StageChoice, StagedCounts, StagedRunner, check_mode, stage_choice_of
from edgeleuk.runtime.trustcheck import TrustChecks, wanted_extras

log = logging.getLogger(__name__)

#: Cells per engine call when none is asked for, by the precision the engine computes in.
#: Each cell is R rotated views (8 x 300x300 for the paper's network) and activations grow
#: with the views per call; these keep `edgeleuk predict` with the full network under 1 GB
#: peak RSS (measured per precision: benchmarks/RESULTS.md), and on small CPUs larger
#: batches add no throughput.
DEFAULT_BATCH = {"fp32": 1, "fp16": 1, "bf16": 4, "int8": 4}


def default_batch(export_precision: str | None, engine_precision: str) -> int:
    """The default cells per engine call for a model exported in ``export_precision``.

    An fp32 file that OpenVINO computes in bf16 counts as bf16; unknown precisions get
    the smallest batch.
    """
    key = "bf16" if export_precision == "fp32" and engine_precision == "bf16" else export_precision
    return DEFAULT_BATCH.get(str(key), min(DEFAULT_BATCH.values()))


@dataclass(frozen=True)
class Prediction:
    """The result for one image.

    Attributes:
        path: Source file, or None for an array.
        status: ``"ok"`` or ``"error"``.
        error: Why the image could not be classified (None when ok).
        prob_all: Probability of ALL (the positive class); None on error.
        label: Class name at the classifier's threshold (``"all"``/``"hem"``); None on error.
        subject: Subject id parsed from the file name, when it carries one.
        adjustments: What decoding changed to meet the input contract (``"padded:..."``...).
        logit: Raw model output before the sigmoid; None on error.
        engine: The engine that made this call when it is not the classifier's own (a cluster
            worker's, e.g. ``openvino@ray-fp32`` where the driver was asked for ``auto``); None: the
            classifier's.
        qc: Input quality reasons (:mod:`edgeleuk.quality` slugs: ``blank``, ``blur``...); empty: ok
            (or not checked, see :attr:`Classifier.trust_note`).
        ood_score: Distance of the cell's embedding from the calibration cells (the model's own
            OOD model); None when the model has none or its graph no embedding.
        ood_flag: ``ood_score`` lies beyond the calibrated threshold.
        cam: Class activation map float32 [crop, crop], upright (positive: evidence for ALL);
            only from a classifier loaded with ``heatmaps=True``.
    """

    path: str | None
    status: str
    error: str | None = None
    prob_all: float | None = None
    label: str | None = None
    subject: str | None = None
    adjustments: tuple[str, ...] = ()
    logit: float | None = None
    engine: str | None = None
    qc: tuple[str, ...] = ()
    ood_score: float | None = None
    ood_flag: bool = False
    cam: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def flagged(self) -> bool:
        """A quality reason or an OOD flag: the call should not be trusted unseen."""
        return bool(self.qc) or self.ood_flag


def _subject(path: Path) -> str | None:
    return subject_from_name(path.name)


def _failed(path: Path | None, error: str, adjustments: tuple[str, ...] = ()) -> Prediction:
    return Prediction(
        path=None if path is None else str(path),
        status="error",
        error=error,
        subject=None if path is None else _subject(path),
        adjustments=adjustments,
    )


def _check_graph(backend: Backend, size: int, source: object, crop: int | None = None) -> None:
    """Refuse a graph whose real inputs/outputs break the contract, before any image is read."""
    found = backend.graph_io()
    if found is None:
        return
    problems = graph_problems(*found, size, crop)
    if problems:
        raise UsageError(
            f"{source}: the graph does not follow the edgeleuk model contract: " + "; ".join(problems)
            + " (export the model with `edgeleuk export`)"
        )


def _check_finite(engine: str, logits: np.ndarray, probs: np.ndarray) -> None:
    """Raise an EngineFault for NaN/inf outputs or probabilities outside [0, 1].

    Such outputs say the weights or the engine are broken, not the images: an error row
    would write the files off for good (``watch`` never reads them again), a fault is retried.
    """
    bad = ~(np.isfinite(logits) & np.isfinite(probs) & (probs >= 0.0) & (probs <= 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise EngineFault(
            f"the {engine} engine returned an impossible output for {int(bad.sum())} of {len(bad)} cell(s) "
            f"(logit {logits[i]}, prob {probs[i]}): the model file's weights or the engine are broken, "
            "not the images (check the model with `edgeleuk bench`, or export it again)"
        )


class Classifier:
    """An exported model on one backend, plus its metadata.

    Thread-safe: one instance may be shared by threads; ``predict_*`` keep no
    state between calls and every backend serves concurrent ``run`` calls
    (ONNX Runtime sessions are thread-safe; each concurrent OpenVINO call
    borrows its own InferRequest from a pool).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        threshold: float | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        selection: str = "requested",
        tta: str = "full",
        qc: bool = True,
        heatmaps: bool = False,
    ) -> None:
        """Wrap an open backend; most callers want :meth:`load`.

        Args:
            backend: An open backend whose model carries edgeleuk metadata.
            threshold: Decision threshold on ``prob_all``; None uses the model's.
            batch_size: Images per engine call; None picks :func:`default_batch` for the model.
            workers: Decoder threads for :meth:`predict_paths`; None picks a default.
            selection: Why this backend was chosen (reported in :attr:`info`).
            tta: ``full`` (every rotation, the file's own result) or ``staged`` (see
                :mod:`edgeleuk.runtime.staged`; needs a calibrated stage choice in the model and a
                backend opened with ``views_input``).
            qc: Check every image's quality (:attr:`Prediction.qc`).
            heatmaps: Fetch each cell's class activation map (:attr:`Prediction.cam`; the backend
                must have opened the ``cam`` output, as :meth:`load` does).
        """
        if batch_size is not None and batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        self.backend = backend
        source = getattr(backend, "model_path", "model")
        self.meta, self.export_info = parse_metadata(backend.metadata(), source)
        _check_graph(backend, self.meta.preprocess.input_size, source, self.meta.preprocess.crop)
        self.threshold = float(self.meta.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"threshold must lie in [0, 1], got {self.threshold}")
        self.threshold_source = self.meta.threshold_source if threshold is None else "override"
        if batch_size is None:
            batch_size = default_batch(self.export_info.get("precision"), backend.info().precision)
        self.batch_size = batch_size
        self.workers = workers
        self.selection = selection
        self.tta = check_mode(tta)
        self.stage = None if tta == "full" else self._stage_choice(backend)
        self._staged = None if self.stage is None else StagedRunner(backend.run_views, self.stage)
        self.trust = TrustChecks(self.meta, getattr(backend, "extras", ()), qc=qc, heatmaps=heatmaps)

    def _stage_choice(self, backend: Backend) -> StageChoice:
        source = getattr(backend, "model_path", "model")
        choice = stage_choice_of(self.meta.extra, self.meta.preprocess.rotations, str(source))
        if not math.isclose(choice.threshold, self.threshold, rel_tol=0.0, abs_tol=1e-12):
            raise UsageError(
                f"{source}: the stage choice was calibrated at threshold {choice.threshold:.6g}, not "
                f"{self.threshold:.6g}; its margin holds only there (calibrate again at this threshold, "
                "or use --tta full)"
            )
        if not getattr(getattr(backend, "options", None), "views_input", False):
            raise UsageError(f"staged TTA needs the {backend.name} backend opened with views_input=True")
        return choice

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        backend: str = "auto",
        *,
        threshold: float | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        tta: str = "full",
        qc: bool = True,
        heatmaps: bool = False,
        **backend_options: Any,
    ) -> Classifier:
        """Open an exported ``.onnx``/``.xml`` model.

        Args:
            model_path: Model exported by ``edgeleuk export``.
            backend: ``auto`` or a registered backend (``cuda``, ``openvino``, ``cpu``).
            threshold: Decision threshold; None uses the model's metadata.
            batch_size: Images per engine call; None picks :func:`default_batch` for the model.
            workers: Decoder threads for :meth:`predict_paths`.
            tta: ``full`` or ``staged`` (early exit; the model must carry a stage choice,
                see ``edgeleuk calibrate``).
            qc: Check each image's quality before trusting its call (:attr:`Prediction.qc`).
            heatmaps: Also compute each cell's class activation map (:attr:`Prediction.cam`).
            **backend_options: ``threads``, ``engine`` (backend name -> its options record) or
                any backend's option field by name (``precision="bf16"``, ``tensorrt=True``...);
                see :func:`edgeleuk.runtime.registry.backend_options`.

        Raises:
            UsageError: Missing/unsupported model, no or malformed edgeleuk metadata (class
                names, input size, threshold, export record), a graph whose inputs/outputs
                break :mod:`edgeleuk.core.contract`, bad options. Raised before any image is read.
            BackendUnavailable: The backend cannot run here (the message names the fix).
        """
        options = dataclasses.replace(build_options(**backend_options), extras=wanted_extras(heatmaps))
        if check_mode(tta) == "staged":
            options = dataclasses.replace(options, views_input=True)
        opened, why = choose_backend(model_path, backend, options)
        return cls(opened, threshold=threshold, batch_size=batch_size, workers=workers, selection=why, tta=tta,
                   qc=qc, heatmaps=heatmaps)

    @property
    def info(self) -> BackendInfo:
        """What runs (providers read back from the engine) and why it was chosen."""
        info = self.backend.info()
        return dataclasses.replace(info, details={**info.details, "selection": self.selection})

    @property
    def input_size(self) -> int:
        return self.meta.preprocess.input_size

    def _label(self, prob: float) -> str:
        return self.meta.label_name(prob >= self.threshold)

    @property
    def staged_counts(self) -> StagedCounts:
        """Cells classified with staged TTA so far, and how many went on to stage 2."""
        return StagedCounts() if self._staged is None else self._staged.counts

    @property
    def tta_note(self) -> str:
        """How staged TTA went so far (empty for full TTA)."""
        return "" if self._staged is None else self._staged.describe()

    @property
    def trust_note(self) -> str:
        """What of QC, OOD and heatmaps is unavailable or defaulted for this model, and why (empty: all there)."""
        return self.trust.note

    def _run_chunk(self, chunk: np.ndarray, names: tuple[str, ...]) -> ExtrasResult:
        if self._staged is not None:
            if names:
                return self._staged.with_extras(self.backend.run_views_extras, chunk, names)
            return (*self._staged(chunk), {})
        return self.backend.run_extras(chunk, names) if names else (*self.backend.run(chunk), {})

    def _run(self, batch: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Run the engine; any failure of its own is an :class:`EngineFault`, not the images' fault.

        Inputs reaching here already meet the contract (decoded and checked), so an
        exception from the engine says the engine, the device or the model is broken.

        Returns:
            ``(logits, probs, {extra name: array})``, one row per image; the extras checked.
        """
        logits, probs, extras = [], [], {name: [] for name in names}
        for start in range(0, len(batch), self.batch_size):
            part = batch[start : start + self.batch_size]
            try:
                lo, pr, got = self._run_chunk(part, names)
                lo, pr = np.asarray(lo).reshape(-1), np.asarray(pr).reshape(-1)
            except EdgeleukError:
                raise
            except Exception as exc:
                raise EngineFault(
                    f"the {self.backend.name} engine failed on a batch of {len(part)}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if lo.shape != (len(part),) or pr.shape != (len(part),):
                raise EngineFault(
                    f"the {self.backend.name} engine returned {lo.size} logit(s) and {pr.size} "
                    f"probabilit(ies) for a batch of {len(part)}"
                )
            _check_finite(self.backend.name, lo, pr)
            self.trust.check(self.backend.name, got, names, len(part))
            logits.append(lo)
            probs.append(pr)
            for name in names:
                extras[name].append(np.asarray(got[name], np.float32))
        return np.concatenate(logits), np.concatenate(probs), {k: np.concatenate(v) for k, v in extras.items()}

    def _predictions(self, paths: Sequence[Path | None], images: Sequence[np.ndarray],
                     adjustments: Sequence[tuple[str, ...]],
                     names: tuple[str, ...] | None = None) -> tuple[list[Prediction], dict[str, np.ndarray]]:
        """Run the engine on ``images`` (a list, or a stacked batch) and make one ok prediction each."""
        names = self.trust.fetch if names is None else names
        logits, probs, extras = self._run(np.stack(images) if isinstance(images, list) else images, names)
        scores, maps = self.trust.scores(extras), extras.get(CAM) if self.trust.heatmaps else None
        out = []
        for i, path in enumerate(paths):
            score = None if scores is None else float(scores[i])
            out.append(Prediction(
                path=None if path is None else str(path), status="ok", prob_all=float(probs[i]),
                label=self._label(float(probs[i])), subject=None if path is None else _subject(path),
                adjustments=adjustments[i], logit=float(logits[i]), qc=self.trust.reasons(images[i]),
                ood_score=score, ood_flag=self.trust.flag(score), cam=None if maps is None else maps[i],
            ))
        return out, extras

    def _check_arrays(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        check_input(images, self.input_size, hint="decode files with predict_paths instead")
        return np.ascontiguousarray(images)

    def predict_arrays(self, images: np.ndarray) -> list[Prediction]:
        """Classify decoded images.

        Args:
            images: uint8 RGB ``[N, S, S, 3]`` (or one ``[S, S, 3]``), S = the model's input size.

        Returns:
            One :class:`Prediction` per image, in order, with ``path`` None.

        Raises:
            EngineFault: The engine failed; no result is made up for these images.
        """
        images = self._check_arrays(images)
        if len(images) == 0:
            return []
        return self._predictions([None] * len(images), images, [()] * len(images))[0]

    def embed_arrays(self, images: np.ndarray) -> tuple[list[Prediction], np.ndarray]:
        """:meth:`predict_arrays` plus each image's ``embedding`` [N, D] (what ``serve`` sends a remote client).

        Raises:
            UsageError: The backend did not open an ``embedding`` (a graph exported before it).
            EngineFault: The engine failed, or returned a non-finite embedding.
        """
        if EMBEDDING not in getattr(self.backend, "extras", ()):
            raise UsageError(f"the {self.backend.name} backend has no '{EMBEDDING}' output open (a model "
                             "exported before it, or a backend opened without it)")
        images = self._check_arrays(images)
        names = tuple(dict.fromkeys((*self.trust.fetch, EMBEDDING)))
        predictions, extras = self._predictions([None] * len(images), images, [()] * len(images), names)
        return predictions, extras[EMBEDDING]

    def _predict_decoded(self, batch: Sequence[tuple[Path, Decoded]]) -> list[Prediction]:
        out = [_failed(path, d.error or "not decoded", d.adjustments) for path, d in batch]
        good = [i for i, (_, d) in enumerate(batch) if d.ok]
        if not good:
            return out
        # An engine fault propagates: the files are fine, so they get no error row.
        made, _ = self._predictions([batch[i][0] for i in good], [batch[i][1].image for i in good],
                                    [batch[i][1].adjustments for i in good])
        for i, prediction in zip(good, made, strict=True):
            out[i] = prediction
        return out

    def iter_predict(self, paths: Iterable[str | Path]) -> Iterator[Prediction]:
        """Yield one :class:`Prediction` per path, in order; decoding overlaps inference.

        Bad files (missing, empty, corrupt, not an image) give ``status="error"`` rows;
        nothing is skipped.

        Raises:
            EngineFault: The engine failed on a batch. Every prediction yielded before it is
                final; the files of that batch and after it have none (callers retry or stop).
        """
        for batch in decoded_batches(
            (Path(p) for p in paths), self.input_size, self.batch_size, workers=self.workers
        ):
            yield from self._predict_decoded(batch)

    def predict_paths(self, paths: Iterable[str | Path]) -> list[Prediction]:
        """Classify image files: one :class:`Prediction` per path, in the given order."""
        return list(self.iter_predict(paths))
