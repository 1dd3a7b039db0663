"""``edgeleuk predict INPUTS --cluster ADDRESS``: the same prediction, with Ray Data across a cluster.

The driver lists the inputs with local ``predict``'s own :func:`~edgeleuk.workflow.inputs.index_inputs`
(files, folders and patterns alike, before Ray starts), Ray Data hands batches of paths to
a fixed pool of workers, each worker opens the model once with its own CPUs as engine threads,
reads and decodes its files with edgeleuk's decoder and returns one record per file (error rows
included). The driver puts the records back in input order and the rest is local ``predict``
itself (:func:`edgeleuk.workflow.predict.predict` with this module's :class:`ClusterClassifier`): the
same rows, order, columns, summary and atomic write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.cluster import connect
from edgeleuk.core.errors import UsageError
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime.base import BackendInfo
from edgeleuk.runtime.classifier import Prediction, default_batch
from edgeleuk.runtime.registry import device_of
from edgeleuk.workflow.inputs import index_inputs
from edgeleuk.workflow.outputs import DEFAULT_OUT
from edgeleuk.workflow.predict import PredictOptions, PredictSummary, load_classifier, predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterShape:
    """How the work is spread.

    Attributes:
        workers: Engine workers (Ray actors), each with its own copy of the model.
        threads: CPUs per worker: Ray reserves them and the engine uses them as threads.
        gpus: GPUs per worker (1 for a backend whose device is ``gpu``, else 0).
    """

    workers: int
    threads: int
    gpus: int = 0


def plan(resources: dict[str, float], backend: str, workers: int | None, threads: int | None) -> ClusterShape:
    """Size the worker pool from what the cluster has free (each given value wins).

    A GPU backend (``Backend.device == "gpu"``): one worker per GPU. Otherwise: up to 4 threads
    per worker (engines scale poorly beyond that on one cell), as many workers as the free CPUs allow.
    """
    cpus = max(1, int(resources.get("CPU", 1)))
    if device_of(backend) == "gpu":
        gpus = int(resources.get("GPU", 0))
        if gpus < 1 and workers is None:
            raise UsageError(f"--backend {backend} with --cluster: the Ray cluster has no free GPU")
        return ClusterShape(workers or gpus, threads or 1, gpus=1)
    threads = threads or min(4, cpus)
    return ClusterShape(workers or max(1, cpus // threads), threads)


def _encode(pred: Prediction) -> str:
    return json.dumps(dataclasses.asdict(pred))


def _decode(text: str) -> Prediction:
    fields = json.loads(text)
    fields["adjustments"] = tuple(fields["adjustments"])
    return Prediction(**fields)


class _Worker:
    """One Ray Data actor: the model opened once, then batches of paths in, records out."""

    def __init__(self, model: str, options: PredictOptions) -> None:
        self.clf = load_classifier(Path(model), options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [json.dumps([_encode(p) for p in self.clf.predict_paths([str(x) for x in chunk])])
                   for chunk in batch["paths"]]
        return {"i": batch["i"], "records": np.array(records, dtype=object)}


class ClusterClassifier:
    """What :func:`edgeleuk.workflow.predict.predict` needs of a classifier, with the work on a Ray cluster.

    The driver reads only the model's metadata (threshold, class names); the engines run in
    the workers.
    """

    def __init__(self, model: Path, options: PredictOptions, shape: ClusterShape) -> None:
        self.model = Path(model).resolve()
        self.meta, self.export_info = read_model_meta(self.model)
        self.threshold = float(self.meta.threshold if options.threshold is None else options.threshold)
        self.threshold_source = self.meta.threshold_source if options.threshold is None else "override"
        self.shape = shape
        # Each worker: engine threads = its CPUs, decoder threads as many, no progress bar of its own;
        # the batch local predict would pick, fixed here so that every worker chunks alike.
        openvino = options.engine.get("openvino")
        requested = getattr(openvino, "precision", "f32") if options.backend in ("auto", "openvino") else ""
        batch = options.batch or default_batch(self.export_info.get("precision"), requested)
        self.options = dataclasses.replace(options, batch=batch, threads=shape.threads, workers=shape.threads,
                                           progress=False)
        self.tta_note = "" if options.tta == "full" else "staged TTA ran in the workers (stage-2 share not gathered)"

    @property
    def info(self) -> BackendInfo:
        """The cluster's shape in the summary (the engines themselves run in the workers)."""
        import ray

        s = self.shape
        return BackendInfo(
            name=f"{self.options.backend}@ray",
            engine=f"ray {ray.__version__} data",
            providers=(f"{s.workers} worker(s) x {s.threads} CPU(s)" + (f" + {s.gpus} GPU" if s.gpus else ""),),
            precision=str(self.export_info.get("precision", "?")),
            details={"backend": self.options.backend, "workers": s.workers, "threads": s.threads},
        )

    def iter_predict(self, paths: Iterable[str | Path]) -> Iterator[Prediction]:
        """One :class:`Prediction` per path, in the given order, as the cluster finishes them."""
        import ray

        paths = [str(p) for p in paths]
        if not paths:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # predict shows its own
        # The same chunks of --batch files as local predict: engines' last bits depend on the batch
        # (ONNX Runtime's reductions differ between batch 1 and 2), and the CSV must match to the byte.
        step = self.options.batch
        items = [{"i": i, "paths": paths[start : start + step]} for i, start in enumerate(range(0, len(paths), step))]
        blocks = max(1, min(len(items), self.shape.workers * 4))
        ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            _Worker,
            fn_constructor_kwargs={"model": str(self.model), "options": self.options},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.shape.workers),
            num_cpus=self.shape.threads,
            num_gpus=self.shape.gpus,
            batch_format="numpy",
        )
        for item, chunk in zip(items, _in_order(ds.iter_rows(), len(items)), strict=True):
            for pred, path in zip(chunk, item["paths"], strict=True):
                if pred.path != path:
                    raise RuntimeError(f"the cluster answered for {pred.path} in place of {path}")
                yield pred


def _in_order(rows: Iterable[dict[str, Any]], n: int) -> Iterator[list[Prediction]]:
    """Yield each chunk's predictions by chunk index as soon as the next one has arrived."""
    waiting: dict[int, list[Prediction]] = {}
    nxt = 0
    for row in rows:
        i = int(row["i"])
        if i in waiting or i < nxt:
            raise RuntimeError(f"the cluster returned chunk #{i} twice")
        waiting[i] = [_decode(text) for text in json.loads(row["records"])]
        while nxt in waiting:
            yield waiting.pop(nxt)
            nxt += 1
    if nxt != n:
        raise RuntimeError(f"the cluster returned {nxt} of {n} chunks")


def cluster_predict(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: Path,
    out: Path = DEFAULT_OUT,
    options: PredictOptions | None = None,
    *,
    address: str = "auto",
    workers: int | None = None,
) -> PredictSummary:
    """Local ``predict``'s output, computed on the Ray cluster at ``address``.

    Args:
        inputs: Image files, folders and patterns, as for local predict (paths every node sees).
        model: Exported model (a path every node sees).
        out: Output file, written by this process, atomically.
        options: As for local predict; ``threads`` sets CPUs per worker.
        address: See :func:`edgeleuk.cluster.connect`.
        workers: Engine workers; None sizes the pool from the cluster's free resources.

    Raises:
        UsageError: As local predict (missing model or input, bad format...), before Ray starts.
        BackendUnavailable: Ray missing or the cluster unreachable (exit 2).
    """
    options = options or PredictOptions()
    read_model_meta(Path(model))  # a missing or foreign model fails before Ray starts
    found = index_inputs(inputs, options.recursive)  # so does an input that matches nothing
    ray = connect(address)
    shape = plan(ray.available_resources(), options.backend, workers, options.threads)
    log.info("cluster predict: %d worker(s) x %d CPU(s)", shape.workers, shape.threads)
    return predict(found, model, out, options, classifier=ClusterClassifier(Path(model), options, shape))
