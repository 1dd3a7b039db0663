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
# spinning barrier made a 2-thread training step 5-10x slower (measured on a 2-core machine).
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


#: The shared tiny export's profile: the shipped ``cpu-fp32`` with a 6-cell gate and a fixed export time.
#: tests/exporting/test_exporting.py checks the file against exactly these settings.
TINY_EXPORT_SETTINGS = {"parity_n": 6, "source_date_epoch": 1_700_000_000}


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_checkpoint`` exported once per session (an ``ExportResult``): float32 ONNX, ``tiny.onnx``.

    Shared and read-only: a test that rewrites a model file (calibrate, metadata edits) writes
    to its own path or copies this one first. The file is checked unchanged at the session's end.
    """
    from edgeleuk.exporting import export_model, load_profile
    from edgeleuk.io.files import sha256_file

    profile = load_profile("cpu-fp32").replace(**TINY_EXPORT_SETTINGS)
    result = export_model(tiny_checkpoint, tmp_path_factory.mktemp("tiny-export") / "tiny.onnx", profile,
                          data=synth_root)
    digest = sha256_file(result.path)
    yield result
    assert sha256_file(result.path) == digest, f"a test modified the shared {result.path}"


@pytest.fixture(scope="session")
def tiny_onnx(tiny_export) -> Path:
    """The path of the shared tiny export (:func:`tiny_export`); never write to it."""
    return tiny_export.path
