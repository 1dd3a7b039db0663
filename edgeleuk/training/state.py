"""What a run carries from epoch to epoch: the optimiser, its schedule, and ``OUT/last.pt``.

Optimiser and schedule: the paper uses three Adam parameter groups (1e-6 for
stages 1-2, 1e-4 for stages 3-5, 1e-2 for the classifier) and multiplies every
rate by 1, 0.1 and 0.01 for epochs 0-1, 2-3 and 4-5 through ``LambdaLR``.

The resumable state: everything is stored as tensors, numbers, strings, lists
and dicts so that it loads with ``weights_only=True``: the numpy and Python RNG
states are taken apart into plain fields rather than pickled as objects, and
the schedule's factor is a plain object rather than a lambda.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeleuk.core.errors import CheckpointError
from edgeleuk.io.atomic import atomic_path
from edgeleuk.modeling.model import param_groups
from edgeleuk.modeling.weights import safe_torch_load
from edgeleuk.training.recipe import Recipe

FORMAT = "edgeleuk.train-state/1"


@dataclass
class StepMultiplier:
    """Picklable ``LambdaLR`` factor: ``gamma ** (milestones reached)``.

    A plain object rather than a lambda so that ``LambdaLR.state_dict`` can store
    it (its fields are ints and floats, loadable with ``weights_only=True``).
    """

    milestones: list[int]
    gamma: float

    def __call__(self, epoch: int) -> float:
        return self.gamma ** sum(1 for m in self.milestones if epoch >= m)


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Adam:
    """Adam over the paper's three parameter groups, each tagged with its ``name``."""
    return torch.optim.Adam(param_groups(model, recipe.lr.as_dict()))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch step decay; call ``.step()`` once after every epoch."""
    factor = StepMultiplier(list(recipe.lr_milestones), recipe.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=[factor] * len(optimizer.param_groups))


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Learning rate of each named parameter group right now."""
    return {g.get("name", str(i)): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


def capture_rng() -> dict[str, Any]:
    """Global RNG states of torch (CPU and CUDA), numpy and Python, as plain data."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


@dataclass
class TrainState:
    """Where a run stands after a finished epoch.

    Attributes:
        next_epoch: First epoch still to run.
        best_f1: Best validation weighted F1 so far (-1 before any epoch).
        best_epoch: Epoch that reached it (-1 before any epoch).
        history: One metrics dict per finished epoch (the lines of ``metrics.jsonl``).
        skipped: Unreadable file -> reason, so far.
    """

    next_epoch: int = 0
    best_f1: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] | None = None
    skipped: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.history = list(self.history or [])
        self.skipped = dict(self.skipped or {})


def save_last(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: Any, scaler: Any, state: TrainState, recipe: dict, seed: int,
              fingerprint: str) -> None:
    """Write ``last.pt`` atomically: a crash leaves the previous one intact."""
    payload = {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": capture_rng(),
        "next_epoch": state.next_epoch,
        "best_f1": state.best_f1,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "skipped": state.skipped,
        "recipe": recipe,
        "seed": seed,
        "data_fingerprint": fingerprint,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_last(path: Path) -> dict[str, Any]:
    """Read ``last.pt`` with ``weights_only=True``.

    Raises:
        CheckpointError: Missing, unsafe or not a training state.
    """
    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an edgeleuk training state (last.pt)")
    return obj


def state_from(payload: dict[str, Any]) -> TrainState:
    """The bookkeeping part of a loaded ``last.pt``."""
    return TrainState(next_epoch=payload["next_epoch"], best_f1=payload["best_f1"],
                      best_epoch=payload["best_epoch"], history=payload["history"],
                      skipped=payload["skipped"])
