"""``edgeleuk bench``: latency, throughput, memory and parity of every backend against PyTorch.

Torch-free at import; the torch reference row runs in its own worker process.
"""

from __future__ import annotations

from edgeleuk.bench.options import BenchOptions
from edgeleuk.bench.report import BenchReport
from edgeleuk.bench.runner import run_bench

__all__ = ["BenchOptions", "BenchReport", "run_bench"]
