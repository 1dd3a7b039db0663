"""``edgeleuk predict INPUTS --cluster ADDRESS``: the same prediction, on a pool of Ray actors across a cluster.

The driver lists the inputs with local ``predict``'s own :func:`~edgeleuk.workflow.inputs.index_inputs`
(files, folders and patterns alike, before Ray starts), sizes the workers from the nodes
(:func:`plan`, :mod:`edgeleuk.cluster.placement`: a request no node can hold is exit 2 before
anything is submitted), and a fixed pool of Ray actors (:mod:`edgeleuk.cluster.pool`) takes
chunks of paths: each worker opens the model once with its own CPUs as engine threads, reads and
decodes its files with edgeleuk's decoder and returns one record per file (error rows included).
The driver puts the records back in input order and the rest is local ``predict`` itself
(:func:`edgeleuk.workflow.predict.predict` with this module's :class:`ClusterClassifier`): the
same rows, order, columns, summary and atomic write. A lost worker's chunks go to the others; a
job with no progress for ``--cluster-timeout`` seconds stops as an engine fault does (exit 1,
the rows made so far in ``OUT.partial.csv``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeleuk.cluster import ClusterOptions, alive_nodes, connect
from edgeleuk.cluster.placement import Ask, Node, place
from edgeleuk.cluster.pool import run_chunks
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime.base import BackendInfo
from edgeleuk.runtime.classifier import Prediction, default_batch
from edgeleuk.runtime.registry import device_of
from edgeleuk.runtime.wire import engine_label
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
        nodes: The plan per node, for the log (not compared).
    """

    workers: int
    threads: int
    gpus: int = 0
    nodes: str = field(default="", compare=False)


def plan(nodes: Sequence[Node], backend: str, workers: int | None, threads: int | None) -> ClusterShape:
    """Size the worker pool from the nodes (each given value wins); exit 2 if no node can hold it.

    A GPU backend (``Backend.device == "gpu"``): one GPU and one CPU per worker (unless
    ``threads``), one worker per GPU. Otherwise: as many CPUs per worker as the smallest node
    has, at most 4 (engines scale poorly beyond that on one cell), and as many workers as fit.

    Raises:
        UsageError: An unknown backend, no node with a GPU for a GPU backend, a worker larger
            than the largest node, or more workers than the nodes hold.
    """
    gpu = device_of(backend) == "gpu"
    ask = Ask("worker", threads=threads or (1 if gpu else None), count=workers, gpus=1 if gpu else 0,
              gpu_fix=f"--backend {backend} needs a GPU on a node: add one, or choose a CPU backend "
                      "(--backend cpu or openvino)")
    placed = place(nodes, ask)
    return ClusterShape(placed.count, placed.threads, int(placed.gpus), nodes=placed.describe("worker"))


def _encode(pred: Prediction) -> dict[str, Any]:
    return dataclasses.asdict(pred)


def _decode(fields: dict[str, Any]) -> Prediction:
    fields = dict(fields)
    # A record may come back with lists where the dataclass holds tuples; equality and the rows need tuples.
    fields["adjustments"] = tuple(fields["adjustments"])
    fields["qc"] = tuple(fields["qc"])
    return Prediction(**fields)


class _Worker:
    """One Ray actor: the model opened once, then chunks of paths in, records out."""

    def __init__(self, model: str, options: PredictOptions) -> None:
        self.clf = load_classifier(Path(model), options)
        info = self.clf.info  # what this worker's engine is (``auto`` may pick another on each node)
        self.engine = engine_label(f"{info.name}@ray", info.precision)

    def ready(self) -> str:
        """Where this worker runs (its node), once the model is open."""
        import ray

        return f"node {ray.get_runtime_context().get_node_id()[:8]}"

    def run(self, paths: list[str]) -> list[dict[str, Any]]:
        return [_encode(dataclasses.replace(p, engine=self.engine)) for p in self.clf.predict_paths(paths)]


class ClusterClassifier:
    """What :func:`edgeleuk.workflow.predict.predict` needs of a classifier, with the work on a Ray cluster.

    The driver reads only the model's metadata (threshold, class names); the engines run in
    the workers.
    """

    def __init__(self, model: Path, options: PredictOptions, shape: ClusterShape,
                 cluster: ClusterOptions | None = None) -> None:
        self.model = Path(model).resolve()
        self.cluster = cluster or ClusterOptions()
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
            engine=f"ray {ray.__version__} actors",
            providers=(f"{s.workers} worker(s) x {s.threads} CPU(s)" + (f" + {s.gpus} GPU" if s.gpus else ""),),
            precision=str(self.export_info.get("precision", "?")),
            details={"backend": self.options.backend, "workers": s.workers, "threads": s.threads},
        )

    def iter_predict(self, paths: Iterable[str | Path]) -> Iterator[Prediction]:
        """One :class:`Prediction` per path, in the given order, as the cluster finishes them.

        Raises:
            EngineFault: A worker's engine failed, every worker was lost, or nothing moved for
                :attr:`ClusterOptions.stall_s` (predict keeps the rows made before it).
        """
        import ray

        paths = [str(p) for p in paths]
        if not paths:
            return
        # The same chunks of --batch files as local predict: engines' last bits depend on the batch
        # (ONNX Runtime's reductions differ between batch 1 and 2), and the CSV must match to the byte.
        step = self.options.batch
        chunks = [paths[start : start + step] for start in range(0, len(paths), step)]
        s = self.shape
        worker = ray.remote(num_cpus=s.threads, num_gpus=s.gpus, max_restarts=0,
                            scheduling_strategy="SPREAD")(_Worker)

        def start() -> Any:
            return worker.remote(str(self.model), self.options)

        results = run_chunks(ray, start, s.workers, chunks, self.cluster.stall_s)
        for i, records in _in_order(results, len(chunks)):
            for pred, path in zip(map(_decode, records), chunks[i], strict=True):
                if pred.path != path:
                    raise RuntimeError(f"the cluster answered for {pred.path} in place of {path}")
                yield pred


def _in_order(results: Iterable[tuple[int, Any]], n: int) -> Iterator[tuple[int, Any]]:
    """Yield each chunk's result by chunk index as soon as the next one has arrived."""
    waiting: dict[int, Any] = {}
    nxt = 0
    for i, result in results:
        if i in waiting or i < nxt:
            raise RuntimeError(f"the cluster returned chunk #{i} twice")
        waiting[i] = result
        while nxt in waiting:
            yield nxt, waiting.pop(nxt)
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
    cluster: ClusterOptions | None = None,
) -> PredictSummary:
    """Local ``predict``'s output, computed on the Ray cluster at ``address``.

    Args:
        inputs: Image files, folders and patterns, as for local predict (paths every node sees).
        model: Exported model (a path every node sees).
        out: Output file, written by this process, atomically.
        options: As for local predict; ``threads`` sets CPUs per worker.
        address: See :func:`edgeleuk.cluster.connect`.
        workers: Engine workers; None: as many as the nodes hold.
        cluster: How long the job may go without progress.

    Raises:
        UsageError: As local predict (missing model or input, bad format...), before Ray starts;
            workers no node can hold (:func:`plan`), before anything is submitted.
        BackendUnavailable: Ray missing or the cluster unreachable (exit 2).
        EngineFault: As local predict, and a job with no progress (exit 1, ``OUT.partial.csv``).
    """
    options = options or PredictOptions()
    read_model_meta(Path(model))  # a missing or foreign model fails before Ray starts
    found = index_inputs(inputs, options.recursive)  # so does an input that matches nothing
    ray = connect(address)
    shape = plan(alive_nodes(ray), options.backend, workers, options.threads)
    log.info("cluster predict: %s", shape.nodes)
    clf = ClusterClassifier(Path(model), options, shape, cluster)
    return predict(found, model, out, options, classifier=clf)
