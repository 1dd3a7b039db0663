"""The torchrun path, exercised on CPU with two gloo processes (multi-GPU cannot be tested here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from training_support import FAST_TOML

from edgeleuk.modeling.checkpoint import load_checkpoint
from edgeleuk.training import distributed as ddp
from edgeleuk.training.rundir import read_metrics


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, device = ddp.setup("cpu")
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
    assert device.type == "cpu"
    model = torch.nn.Linear(2, 1)
    assert ddp.wrap(model, info, device) is model and ddp.unwrap(model) is model
    assert ddp.sum_across([1.0, 2.0], info, device) == [1.0, 2.0]
    assert ddp.per_process_batch(16, info) == 16


def test_batch_must_split_across_processes():
    from edgeleuk.core.errors import UsageError

    with pytest.raises(UsageError, match="split"):
        ddp.per_process_batch(5, ddp.DistInfo(rank=0, world_size=2))
    assert ddp.per_process_batch(16, ddp.DistInfo(rank=1, world_size=4)) == 4


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synth_root, tmp_path):
    recipe = tmp_path / "fast.toml"
    recipe.write_text(FAST_TOML)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "edgeleuk", "train", str(synth_root), "--recipe", str(recipe), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_done"] == 1
    (line,) = read_metrics(out / "metrics.jsonl")
    assert line["train_images"] == 8  # two ranks x two batches of 2: the global batch of 4 is kept
    assert load_checkpoint(out / "best.pt").meta.recipe == "fast"
