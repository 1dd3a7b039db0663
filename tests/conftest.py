"""Shared fixtures: a tiny synthetic C-NMC set and a tiny random-weight checkpoint.

Everything here is SYNTHETIC; figures from it say nothing about leukaemia diagnosis.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores on CI: keep torch from oversubscribing when several things run.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Idle OpenMP threads sleep instead of spinning: with other processes on the same cores a
# spinning barrier made a 2-thread training step 5-10x slower (measured, trainer helper).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data set in the public C-NMC release layout."""
    from edgeleuk.synth.dataset import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, subjects=10, cells_per_subject=6, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ``seresnext_tiny`` checkpoint with the paper's preprocessing (8 rotations)."""
    import torch

    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    torch.manual_seed(0)
    model = create_model("seresnext_tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model.state_dict(), ModelMeta(arch="seresnext_tiny", recipe="test"))
    return path
