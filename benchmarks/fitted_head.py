"""A head for the benchmark's random-weight network, fitted on SYNTHETIC cells (a linear probe).

With random weights every logit of the full network sits ~0.009 from the threshold, so
decision agreement between engines is all or nothing. Fitting only the final linear layer
(``last_linear``) as an L2-regularised logistic regression on the random trunk's pooled
features of labelled SYNTHETIC training cells spreads the logits over several units, as a
trained model's are, so agreement, F1 deltas and staged TTA's stop share mean something.
It is still not a trained model: the trunk is random and the cells are synthetic.

Before the probe, the batch-norm statistics are re-estimated on the same cells (forward
passes only, no weight changes). A random trunk with the default statistics (mean 0, var 1)
ends in pooled features that barely depend on the input, so a probe on them needs huge
weights, and any rounding (bf16, INT8) anywhere in the trunk is amplified into logit
errors of several units: the INT8 export's accuracy control then saw an F1 drop of 0.70.
With statistics from real activations every layer's output varies at unit scale across
cells, as in a trained network, and quantization noise stays small against that spread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeleuk.core.meta import ModelMeta
from edgeleuk.io.data import discover, spread
from edgeleuk.io.imageio import decode_image
from edgeleuk.modeling.tta import rotated_views

log = logging.getLogger("standard.head")


def _features(net: torch.nn.Module, x: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """The inputs of ``net.last_linear`` (pooled trunk features) for preprocessed views ``x``."""
    grabbed: list[torch.Tensor] = []
    hook = net.last_linear.register_forward_hook(lambda _m, inp, _out: grabbed.append(inp[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch):
                net(x[start : start + batch])
    finally:
        hook.remove()
    return torch.cat(grabbed).double()


def recalibrate_batchnorm(net: torch.nn.Module, x: torch.Tensor, batch: int = 8) -> int:
    """Re-estimate every BatchNorm's running mean/var on ``x`` (cumulative average); weights unchanged.

    Returns:
        The number of BatchNorm layers re-estimated.
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
        m.train()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch):
                net(x[start : start + batch])
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        net.eval()
    return len(norms)


def _views(meta: ModelMeta, data: Path, cells: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Two rotated views per labelled training cell (0 degrees and one other), preprocessed."""
    pre = meta.preprocess
    records = [r for r in discover(data).split("train") if r.label is not None]
    records = spread(records, cells)
    images = np.stack([decode_image(r.path, pre.input_size).image for r in records])
    views = rotated_views(images, pre)  # [N, R, crop, crop, 3]
    other = 1 + np.arange(len(records)) % (pre.rotations - 1) if pre.rotations > 1 else np.zeros(len(records), int)
    picked = np.concatenate([views[:, 0], views[np.arange(len(records)), other]])
    x = torch.from_numpy(picked).permute(0, 3, 1, 2).float() * pre.scale
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    labels = torch.tensor([r.label for r in records] * 2, dtype=torch.float64)
    return x, labels, f"{len(records)} SYNTHETIC training cells of {data}"


def _logistic(feats: torch.Tensor, labels: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression on standardised features; weights folded back to raw features."""
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-12)
    z = (feats - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, labels) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / std).detach()
    return w_raw, (b - (w_raw * mean).sum()).detach()


def fit_head(net: torch.nn.Module, meta: ModelMeta, data: Path, cells: int = 160, l2: float = 0.05) -> dict[str, Any]:
    """Replace ``net.last_linear`` by a logistic probe fitted on SYNTHETIC training cells.

    Args:
        net: The network, random weights, in eval mode; its BatchNorm statistics and head are changed in place.
        meta: Its metadata (preprocessing).
        data: A SYNTHETIC data set with a labelled training split.
        cells: Training cells used (two rotated views each).
        l2: Ridge strength on the standardised features: keeps the logits finite on separable cells.

    Returns:
        What was fitted, for the checkpoint's metadata and RESULTS.md.
    """
    x, labels, source = _views(meta, data, cells)
    norms = recalibrate_batchnorm(net, x)
    feats = _features(net, x)
    w, b = _logistic(feats, labels, l2)
    with torch.no_grad():
        net.last_linear.weight.copy_(w.view(1, -1).float())
        net.last_linear.bias.copy_(b.view(1).float())
    logits = (feats @ w + b).numpy()
    acc = float(((logits >= 0) == labels.numpy().astype(bool)).mean())
    return {
        "trunk": (f"random, seed 0 (no pretrained or trained weights offline); the running statistics of its {norms} "
                  f"BatchNorm layers re-estimated on the same {len(x)} views"),
        "head": (f"last_linear fitted as an L2 ({l2:g}) logistic probe on the random trunk's pooled features "
                 f"of {source} (2 rotated views each)"),
        "fit_logits": {"min": float(logits.min()), "max": float(logits.max()), "std": float(logits.std())},
        "fit_accuracy": acc,
    }
