"""Process-wide settings for the length of one run, restored afterwards."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from edgeleuk.training.recipe import Recipe
from edgeleuk.training.rundir import RunFiles


@contextlib.contextmanager
def torch_settings(recipe: Recipe, device: torch.device) -> Iterator[None]:
    """Deterministic kernels, cuDNN autotuning and thread count as the recipe asks."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                torch.backends.cudnn.deterministic, torch.get_num_threads())
    if recipe.deterministic:
        # cuBLAS needs this before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
    # The paper let cuDNN pick the fastest kernels; that trades bit-exact repeats for speed.
    torch.backends.cudnn.benchmark = device.type == "cuda" and not recipe.deterministic
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1], previous[2]
        torch.set_num_threads(previous[3])


@contextlib.contextmanager
def run_log(files: RunFiles, enabled: bool) -> Iterator[None]:
    """Copy ``edgeleuk`` log records to ``OUT/train.log`` (appending, so resumes keep history)."""
    if not enabled:
        yield
        return
    files.root.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(files.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("edgeleuk")
    previous_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the log file always gets the per-epoch lines
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()
