"""Optional multi-GPU data parallelism under ``torchrun``; a no-op in a single process.

``torchrun --nproc_per_node=4 -m edgeleuk train DATA --recipe paper --out runs/x``
sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; then every process trains on its
share of each epoch (``DistributedSampler``, global batch size kept), gradients
are averaged by ``DistributedDataParallel``, and rank 0 alone validates, logs
and writes checkpoints while the others wait at a barrier. Everything else in
the training package is unaware of distribution: it only calls the helpers here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from edgeleuk.core.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank (0 in a single process).
        world_size: Number of processes (1 in a single process).
        local_rank: GPU index on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str, info: DistInfo) -> torch.device:
    """``auto`` -> CUDA if available, else CPU; ``cuda`` without a GPU is a usage error."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("the recipe asks for device = 'cuda' but no CUDA GPU is visible; set device = 'auto'")
    return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())


def setup(preference: str) -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` process group if ``WORLD_SIZE > 1``; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        info = DistInfo()
        return info, pick_device(preference, info)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(preference, info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("distributed: rank %d of %d on %s", info.rank, world, device)
    return info, device


def cleanup(info: DistInfo) -> None:
    """Leave the process group, if this process joined one."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside a DDP wrapper (for validation and checkpoints)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def sum_across(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all processes (identity in a single process)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def train_sampler(dataset: Dataset, info: DistInfo, seed: int) -> DistributedSampler:
    """Seeded shuffle, reshuffled by ``set_epoch``: the same order for a given seed and epoch."""
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)


def per_process_batch(batch_size: int, info: DistInfo) -> int:
    """Split the recipe's global batch evenly across processes."""
    if batch_size % info.world_size:
        raise UsageError(f"batch_size {batch_size} does not split across {info.world_size} processes")
    return batch_size // info.world_size
