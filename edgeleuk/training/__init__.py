"""Training: the paper's recipe and its ablations, seed sweeps and their comparison.

``train`` runs one recipe (``edgeleuk train``), :func:`~edgeleuk.training.sweep.run_sweep`
one run per seed and the paper's Table 2 (``edgeleuk sweep``),
:func:`~edgeleuk.training.compare.compare_sweeps` Figure 4 and Mann-Whitney U tests
(``edgeleuk compare``). Recipes are TOML files in ``train/``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recipe", "TrainResult", "load_recipe", "train"]


def __getattr__(name: str) -> Any:
    # Lazy: `edgeleuk compare` needs no torch, and importing this package should not load it.
    if name == "train":
        from edgeleuk.training.loop import train

        return train
    if name in ("Recipe", "load_recipe"):
        from edgeleuk.training import recipe

        return getattr(recipe, name)
    if name == "TrainResult":
        from edgeleuk.training.rundir import TrainResult

        return TrainResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
