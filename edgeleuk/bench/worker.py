"""Measure one benchmark row: load, warm up, latency, throughput, outputs for parity.

Runs in its own process (``python -m edgeleuk.bench.worker SPEC.json``) so that
its peak memory is its own and engines' thread pools never meet; the parent
reads the result JSON. It can also run in-process (:func:`measure`).
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.bench.cases import Case
from edgeleuk.bench.machine import load_average
from edgeleuk.bench.memory import self_peak_rss
from edgeleuk.bench.timing import measure_latency, measure_throughput, timed
from edgeleuk.core.errors import BackendUnavailable
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.io.modelfile import parse_metadata
from edgeleuk.runtime.base import Backend
from edgeleuk.runtime.registry import backend_options, open_backend
from edgeleuk.runtime.staged import StagedRunner, stage_choice_of

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class WorkSpec:
    """What a worker measures and how long it may take.

    Attributes:
        case: The row.
        checkpoint: Checkpoint for the torch row.
        threads: Threads for the engine.
        budget_s: Seconds per timing loop.
        min_runs: Fewest latency runs.
        max_runs: Most latency runs.
        warmup_runs: Untimed runs after the first call.
        batch_sizes: Batch sizes for plain throughput; the largest also gives the parity outputs.
        throughput_mode: Also measure the engine's throughput mode.
    """

    case: Case
    checkpoint: Path | None
    threads: int
    budget_s: float
    min_runs: int
    max_runs: int
    warmup_runs: int
    batch_sizes: tuple[int, ...]
    throughput_mode: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["case"] = self.case.to_dict()
        d["checkpoint"] = None if self.checkpoint is None else str(self.checkpoint)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkSpec:
        d = dict(d)
        d["case"] = Case.from_dict(d["case"])
        d["checkpoint"] = None if d.get("checkpoint") is None else Path(d["checkpoint"])
        d["batch_sizes"] = tuple(d["batch_sizes"])
        return cls(**d)


@dataclass
class Measurement:
    """What a worker found; ``status`` is ``ok``, ``unavailable`` or ``error``."""

    status: str
    reason: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    load_s: float | None = None
    warmup_s: float | None = None
    latency: dict[str, Any] | None = None
    throughput: dict[int, float] = field(default_factory=dict)
    mode: dict[str, Any] | None = None
    peak_rss: int | None = None
    isolated: bool = False
    load_avg: tuple[float, float] | None = None
    logits: list[float] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    staged: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        d = dict(d)
        d["throughput"] = {int(k): float(v) for k, v in d.get("throughput", {}).items()}
        return cls(**d)


def _open_engine(spec: WorkSpec) -> tuple[RunFn, dict[str, Any], Backend | None]:
    """The row's run function, what runs (as the engine reports it) and the backend (None for torch)."""
    case = spec.case
    if case.backend == "torch":
        # Lazy: only the torch row may load torch; the other rows' processes measure their engine alone.
        import torch

        from edgeleuk.modeling.checkpoint import load_checkpoint
        from edgeleuk.modeling.reference import TorchReference

        torch.set_num_threads(spec.threads)  # same thread count as every other engine: a fair race
        ref = TorchReference(load_checkpoint(spec.checkpoint))
        return ref.predict_arrays, {
            "engine": f"torch {torch.__version__}", "path": "eager, PIL rotations (the paper's)",
            "threads": torch.get_num_threads(),
        }, None
    # The row's own options on top of each backend's defaults: what predict deploys, plus the variant.
    staged = case.tta == "staged"
    options = backend_options(threads=spec.threads, views_input=staged, **case.options)
    backend = open_backend(case.model, case.backend, options)
    if not staged:
        return backend.run, asdict(backend.info()), backend
    meta, _ = parse_metadata(backend.metadata(), case.model)
    runner = StagedRunner(backend.run_views, stage_choice_of(meta.extra, meta.preprocess.rotations, str(case.model)))
    return runner, asdict(backend.info()), backend


def _stage2_share(run: RunFn, cells: np.ndarray, batch: int) -> dict[str, Any] | None:
    """For a staged row: one untimed pass over the cells, counting those that went on to stage 2."""
    if not isinstance(run, StagedRunner):
        return None
    counter = StagedRunner(run.run_views, run.choice)
    for start in range(0, len(cells), batch):
        counter(cells[start : start + batch])
    return {"cells": counter.counts.cells, "stage2": counter.counts.stage2, "share": counter.counts.stage2_share,
            "views": list(run.choice.views), "margin": run.choice.margin}


class _FirstPass:
    """Wraps a run function and keeps the outputs of the first ``n`` cells it sees."""

    def __init__(self, run: RunFn, n: int) -> None:
        self.run, self.n = run, n
        self.logits: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probs = self.run(batch)
        missing = self.n - sum(len(x) for x in self.logits)
        if missing > 0:
            self.logits.append(np.asarray(logits)[:missing])
            self.probs.append(np.asarray(probs)[:missing])
        return logits, probs


def measure(spec: WorkSpec, cells: np.ndarray) -> Measurement:
    """Measure one row in this process (see the module docstring for the order of steps)."""
    load_before = load_average()  # other processes on the cores distort timings: record them
    (run, engine, backend), load_s = timed(lambda: _open_engine(spec))
    _, warmup_s = timed(lambda: run(cells[:1]))
    for i in range(spec.warmup_runs):
        run(cells[(i + 1) % len(cells)][None])
    latency = measure_latency(run, cells, spec.budget_s, spec.min_runs, spec.max_runs)
    throughput: dict[int, float] = {}
    first = _FirstPass(run, len(cells))
    for b in sorted(spec.batch_sizes, reverse=True):
        if b == max(spec.batch_sizes):  # one full in-order pass gives the parity outputs
            throughput[b] = measure_throughput(first, cells, b, spec.budget_s, math.ceil(len(cells) / b))
        else:
            throughput[b] = measure_throughput(run, cells, b, spec.budget_s)
    staged = _stage2_share(run, cells, max(spec.batch_sizes))
    if staged is not None:
        engine["tta"] = (f"staged: stage 1 rotations {staged['views']}, {staged['stage2']} of {staged['cells']} "
                         f"cells ({staged['share']:.1%}) went on to stage 2")
    mode = None
    if spec.throughput_mode and backend is not None:
        choice = run.choice if isinstance(run, StagedRunner) else None
        result = backend.throughput_mode(cells, spec.budget_s, max(spec.batch_sizes), staged=choice)
        mode = None if result is None else result.to_dict()
    load_after = load_average()
    return Measurement(
        status="ok", engine=engine, load_s=load_s, warmup_s=warmup_s, latency=latency.to_dict(),
        throughput=dict(sorted(throughput.items())), mode=mode, peak_rss=self_peak_rss(), staged=staged,
        load_avg=None if load_before is None or load_after is None else (load_before, load_after),
        logits=np.concatenate(first.logits).astype(float).tolist(),
        probs=np.concatenate(first.probs).astype(float).tolist(),
    )


def measure_safely(spec: WorkSpec, cells: np.ndarray) -> Measurement:
    """:func:`measure`, turning failures into an ``unavailable`` or ``error`` row."""
    try:
        return measure(spec, cells)
    except BackendUnavailable as exc:
        return Measurement(status="unavailable", reason=str(exc))
    except ImportError as exc:
        return Measurement(status="unavailable", reason=f"{exc} (install the package that provides it)")
    except Exception as exc:  # noqa: BLE001  (one broken row must not hide the others)
        traceback.print_exc()
        return Measurement(status="error", reason=f"{type(exc).__name__}: {exc}")


def main(argv: list[str]) -> int:
    """``python -m edgeleuk.bench.worker SPEC.json``: SPEC holds ``spec``, ``images`` and ``out``."""
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    spec = WorkSpec.from_dict(job["spec"])
    result = measure_safely(spec, np.load(job["images"]))
    result.isolated = True
    atomic_write_text(job["out"], json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
