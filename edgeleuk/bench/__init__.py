"""``edgeleuk bench``: latency, throughput, memory and parity of every backend against PyTorch.

Torch-free at import; the torch reference row runs in its own worker process. Import what you need
from the modules (``edgeleuk.bench.options``, ``edgeleuk.bench.runner``): this package imports
nothing, so the CLI can read the bench choices without loading the harness.
"""
