"""What a benchmark run measures and how long it may spend on each figure."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.registry import BACKENDS
from edgeleuk.runtime.staged import check_mode

ALL, TORCH = "all", "torch"


def bench_choices() -> tuple[str, ...]:
    """What ``--backend`` may name: every row, each registered backend, or the PyTorch original."""
    return (ALL, *BACKENDS, TORCH)


@dataclass(frozen=True)
class BenchOptions:
    """Options of :func:`edgeleuk.bench.run_bench`.

    Attributes:
        backend: ``all``, a registered backend or ``torch`` (:func:`bench_choices`). The torch row is
            measured whenever a checkpoint is given: it is the reference for parity and speed-up.
        n: Most cells to use.
        batch: Largest batch size tried for throughput (powers of two up to it, and it).
        threads: Inference threads for every engine, torch included (default: all logical cores).
        extra_models: More model files (e.g. an OpenVINO INT8 IR) benchmarked beside the main one.
        budget_s: Seconds each timing loop runs for (latency, each throughput batch size).
        min_runs: Fewest timed batch-1 runs for the latency percentiles.
        max_runs: Most timed batch-1 runs.
        warmup_runs: Untimed runs after the first (timed as warm-up) call.
        quick: Smoke-test scale: short budget, few runs, batch sizes 1 and ``batch`` only.
            The numbers are rough; use it to check the harness, not to compare engines.
        isolate: Measure each row in its own subprocess, which gives a clean peak-memory
            figure per row and keeps engines' thread pools from meeting.
        throughput_mode: Also measure each engine's throughput mode (OpenVINO THROUGHPUT hint
            with an AsyncInferQueue, ONNX Runtime IO binding on CUDA).
        seed: Seed for the random cells used when no data is given.
        tta: ``full``, or ``staged``: the rows of model files that carry a calibrated stage
            choice run staged TTA (``edgeleuk.runtime.staged``) and report the share of cells that
            went on to stage 2; the other files' rows stay full.
        engine_fields: Backend option fields by name (``--server`` for remote...), under each
            row's own variant options.
    """

    backend: str = "all"
    n: int = 32
    batch: int = 8
    threads: int | None = None
    extra_models: tuple[Path, ...] = ()
    budget_s: float = 2.0
    min_runs: int = 10
    max_runs: int = 500
    warmup_runs: int = 2
    quick: bool = False
    isolate: bool = True
    throughput_mode: bool = True
    seed: int = 0
    tta: str = "full"
    engine_fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_mode(self.tta)
        if self.backend not in bench_choices():
            raise UsageError(f"--backend must be one of {', '.join(bench_choices())}, got {self.backend!r}")
        if self.n < 1 or self.batch < 1:
            raise UsageError("--n and --batch must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be at least 1")
        if self.min_runs < 1 or self.max_runs < self.min_runs:
            raise UsageError("need 1 <= min_runs <= max_runs")
        object.__setattr__(self, "extra_models", tuple(Path(p) for p in self.extra_models))

    def effective(self) -> BenchOptions:
        """These options with ``quick`` applied (small budget and run counts)."""
        if not self.quick:
            return self
        return replace(
            self, budget_s=min(self.budget_s, 0.2), min_runs=min(self.min_runs, 3),
            max_runs=min(self.max_runs, 20), warmup_runs=min(self.warmup_runs, 1),
        )

    def batch_sizes(self, n_cells: int) -> tuple[int, ...]:
        """Batch sizes tried for throughput: 1, powers of two below ``batch``, and ``batch``.

        Capped at ``n_cells``; ``quick`` keeps only the smallest and the largest.
        """
        top = max(1, min(self.batch, n_cells))
        sizes = {1, top}
        if not self.quick:
            sizes.update(b for b in (2, 4, 8, 16, 32, 64) if b < top)
        return tuple(sorted(sizes))
