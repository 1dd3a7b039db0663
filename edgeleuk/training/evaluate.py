"""Validation with the paper's rotation TTA: logits averaged over ``preprocess.rotations`` views.

Two interchangeable implementations feed the network the same pixels:

* ``pil``: each cell is cropped and rotated with PIL in the data loader
  (``augment.rotation_stack``), exactly as the paper's ``TF_VALID_ROT``;
* ``gather``: raw uint8 cells go to ``edgeleuk.modeling.tta.TTAClassifier``, which crops
  and rotates every view with one index gather on the device. Its tests prove
  it equal to the PIL path; ``val_tta = "auto"`` chooses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.core.numerics import sigmoid
from edgeleuk.evaluation.metrics import binary_metrics, per_subject_accuracy
from edgeleuk.io.data import Record

# The module, not the class: the class is built on first use (it imports torch), and a name bound
# at import would pin the first build (make mutate could then never reach a changed definition).
from edgeleuk.modeling import tta


def use_gather(choice: str) -> bool:
    """Resolve the recipe's ``val_tta`` to gather (True) or PIL (False); ``auto`` means gather."""
    return choice != "pil"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """CUDA float16 autocast when enabled, else a no-op."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def tta_logits(net: nn.Module, x: torch.Tensor, gather: nn.Module | None) -> torch.Tensor:
    """Averaged logits of a batch: uint8 ``[N, H, W, 3]`` (gather) or float ``[N, R, 3, c, c]`` (PIL)."""
    if x.dtype == torch.uint8:
        if gather is None:
            raise UsageError("raw uint8 validation batch but no gather TTA module")
        return gather(x)[0]
    n, r = x.shape[:2]
    return net(x.flatten(0, 1)).float().reshape(n, r).mean(dim=1)


@dataclass
class EvalResult:
    """Validation outcome of one epoch.

    Attributes:
        logits: Rotation-averaged logit per evaluated cell.
        labels: Their labels.
        indices: Their positions in the validation record list.
        skipped: Record position -> why the image could not be read.
        loss: Weighted BCE on the averaged logits (mean over cells).
        metrics: ``edgeleuk.evaluation.metrics.binary_metrics`` of the cells.
    """

    logits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    skipped: dict[int, str] = field(default_factory=dict)
    loss: float = float("nan")
    metrics: dict[str, Any] = field(default_factory=dict)

    def prediction_rows(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        """One CSV row per evaluated cell."""
        probs = sigmoid(self.logits)
        return [{"path": str(records[i].path), "subject": records[i].subject or "", "label": int(y),
                 "logit": f"{lg:.6f}", "prob": f"{p:.6f}"}
                for i, y, lg, p in zip(self.indices, self.labels, self.logits, probs, strict=True)]

    def subject_accuracy(self, records: Sequence[Record], threshold: float) -> dict[str, dict[str, Any]]:
        """Accuracy per validation subject (the paper's Figure 3), ``H`` subjects marked healthy."""
        subjects = [records[i].subject for i in self.indices]
        return per_subject_accuracy(subjects, self.labels, sigmoid(self.logits), threshold=threshold)


def compute_metrics(labels: np.ndarray, logits: np.ndarray, threshold: float) -> dict[str, Any]:
    """Paper metrics on probabilities ``sigmoid(logit)`` (float32, as the graph's ``prob``) at the model's threshold."""
    return binary_metrics(labels, sigmoid(logits), threshold=threshold)


@torch.inference_mode()
def evaluate(net: nn.Module, loader: DataLoader, *, meta: ModelMeta, pos_weight: float,
             device: torch.device, amp: bool = False, progress: Any = None) -> EvalResult:
    """Run rotation-TTA validation over ``loader`` (a :class:`CellDataset` loader).

    Args:
        net: The plain (unwrapped) network.
        loader: Validation loader; yields PIL rotation stacks or raw uint8 cells.
        meta: Preprocessing (crop, rotations, scale) and threshold.
        pos_weight: BCE weight of the positive class, as in training.
        device: Where to run.
        amp: CUDA float16 autocast.
        progress: Optional callable ``progress(n_cells)`` after each batch.
    """
    was_training = net.training
    net.eval()
    gather = _gather_module(net, meta, device) if getattr(loader.dataset, "raw", False) else None
    logits, labels, indices, skipped = [], [], [], {}
    for batch in loader:
        ok = [not e for e in batch["error"]]
        skipped.update({int(i): e for i, e in zip(batch["index"], batch["error"], strict=True) if e})
        if any(ok):
            mask = torch.tensor(ok)
            with autocast(device, amp):
                out = tta_logits(net, batch["x"][mask].to(device, non_blocking=True), gather)
            logits.append(out.float().cpu())
            labels.append(batch["label"][mask])
            indices.append(batch["index"][mask])
        if progress is not None:
            progress(len(ok))
    net.train(was_training)
    if not logits:
        raise DataError("no validation image could be read; see skipped.txt in the run folder")
    result = EvalResult(logits=torch.cat(logits).numpy(), labels=torch.cat(labels).numpy(),
                        indices=torch.cat(indices).numpy(), skipped=skipped)
    target = torch.from_numpy(result.labels).double()
    result.loss = float(F.binary_cross_entropy_with_logits(
        torch.from_numpy(result.logits).double(), target, pos_weight=torch.tensor(pos_weight).double()))
    result.metrics = compute_metrics(result.labels, result.logits, meta.threshold)
    return result


def _gather_module(net: nn.Module, meta: ModelMeta, device: torch.device) -> nn.Module:
    """A ``TTAClassifier`` sharing ``net``'s weights (no copy)."""
    return tta.TTAClassifier(net, meta).to(device).eval()
