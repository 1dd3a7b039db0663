"""Timing loops: warm-up, latency percentiles over an adaptive run count, throughput.

Every loop runs for a time budget rather than a fixed count, so a fast engine
gets many samples and the slow eager-PyTorch row still finishes: at least
``min_runs`` and at most ``max_runs`` runs, stopping once the budget is spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Clock = Callable[[], float]
PERCENTILES = (50, 90, 99)


def percentiles(samples: Sequence[float], qs: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """Percentiles with linear interpolation between order statistics (numpy's default).

    Returns:
        ``{"p50": ..., "p90": ..., "p99": ...}`` for the default ``qs``.

    Raises:
        ValueError: No samples.
    """
    if len(samples) == 0:
        raise ValueError("percentiles of no samples")
    values = np.percentile(np.asarray(samples, dtype=np.float64), list(qs))
    return {f"p{q:g}": float(v) for q, v in zip(qs, values, strict=True)}


def repeat_for(
    fn: Callable[[int], Any], budget_s: float, min_runs: int, max_runs: int,
    clock: Clock = time.perf_counter,
) -> list[float]:
    """Call ``fn(i)`` for ``i = 0, 1, ...`` and time each call.

    Stops after ``max_runs`` calls, or once ``min_runs`` calls are done and the
    budget is spent.

    Returns:
        Seconds per call.
    """
    times: list[float] = []
    start = clock()
    while len(times) < max_runs:
        t0 = clock()
        fn(len(times))
        t1 = clock()
        times.append(t1 - t0)
        if len(times) >= min_runs and t1 - start >= budget_s:
            break
    return times


@dataclass(frozen=True)
class Latency:
    """Per-cell latency at batch 1.

    Attributes:
        p50_ms: Median milliseconds.
        p90_ms: 90th percentile.
        p99_ms: 99th percentile (with few runs, close to the maximum).
        runs: Timed runs behind the percentiles.
        mean_ms: Mean milliseconds.
    """

    p50_ms: float
    p90_ms: float
    p99_ms: float
    runs: int
    mean_ms: float

    @classmethod
    def from_seconds(cls, times: Sequence[float]) -> Latency:
        p = percentiles([t * 1e3 for t in times])
        return cls(p["p50"], p["p90"], p["p99"], len(times), float(np.mean(times)) * 1e3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(
    run: Callable[[np.ndarray], Any], cells: np.ndarray, budget_s: float, min_runs: int, max_runs: int,
) -> Latency:
    """Batch-1 latency, cycling through ``cells`` so no single image is favoured."""
    times = repeat_for(lambda i: run(cells[i % len(cells)][None]), budget_s, min_runs, max_runs)
    return Latency.from_seconds(times)


def measure_throughput(
    run: Callable[[np.ndarray], Any], cells: np.ndarray, batch: int, budget_s: float, min_batches: int = 2,
    clock: Clock = time.perf_counter,
) -> float:
    """Cells per second at a batch size, cycling through ``cells``.

    Runs at least ``min_batches`` batches and keeps going until the budget is spent.
    """
    n = len(cells)
    done, start = 0, clock()
    while True:
        idx = np.arange(done, done + batch) % n
        run(cells[idx])
        done += batch
        elapsed = clock() - start
        if done >= min_batches * batch and elapsed >= budget_s:
            return done / elapsed


def timed(fn: Callable[[], Any], clock: Clock = time.perf_counter) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    t0 = clock()
    value = fn()
    return value, clock() - t0
