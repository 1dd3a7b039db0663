"""Process-wide settings for the length of one run, restored afterwards."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
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


@contextlib.contextmanager
def loader_signals() -> Iterator[None]:
    """Give back the SIGCHLD disposition that data-loader workers take over for the run.

    With ``num_workers > 0`` torch installs a process-wide Python SIGCHLD handler (to notice a
    worker that dies) and never removes it. Left behind, it makes every later child exit in the
    process (a benchmark row, ``edgeleuk bench`` run by the demo) deliver a signal that Python
    handles on the main thread's alternate signal stack. OpenVINO's CPU plugin can leave that
    stack unmapped (two ``ov.Core`` released in creation order, as an INT8 export does); the
    kernel then cannot deliver the signal and kills the process with SIGSEGV. The default
    disposition ignores SIGCHLD without delivering it. torch's "installed" flag is restored too,
    so the loaders of the next run in this process (``sweep``) install their handler again.
    """
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield  # torch installs its handler only from the main thread, and never on Windows
        return
    from torch.utils.data._utils import signal_handling

    previous = signal.getsignal(signal.SIGCHLD)
    was_set = getattr(signal_handling, "_SIGCHLD_handler_set", None)
    try:
        yield
    finally:
        if previous is not None:  # None: installed outside Python, which signal.signal cannot restore
            signal.signal(signal.SIGCHLD, previous)
        if was_set is not None:
            signal_handling._SIGCHLD_handler_set = was_set
