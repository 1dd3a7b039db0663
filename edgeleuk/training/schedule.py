"""Optimiser and learning-rate schedule: Adam with layer-wise rates and step decay.

The paper uses three Adam parameter groups (1e-6 for stages 1-2, 1e-4 for
stages 3-5, 1e-2 for the classifier) and multiplies every rate by 1, 0.1 and
0.01 for epochs 0-1, 2-3 and 4-5 through ``LambdaLR``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeleuk.model import param_groups
from edgeleuk.training.recipe import Recipe


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
