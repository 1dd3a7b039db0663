"""The gate's verdict per engine: one that cannot run on this machine is skipped, not failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_ort import CPU, CUDA, FakeOrt, install
from runtime_support import build_onnx

from edgeleuk.exporting.gate import ReferenceOutputs, check_engine
from edgeleuk.exporting.imagesets import ImageSet
from edgeleuk.exporting.profile import load_profile
from edgeleuk.runtime import cuda as cuda_mod


def test_gpu_wheel_without_a_working_gpu_skips_the_cuda_engine(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """The wheel offers CUDA, but the session starts on the CPU only (no GPU, no driver, no cuDNN)."""
    model = build_onnx(tmp_path / "tiny.onnx")
    monkeypatch.setattr(cuda_mod, "installed_ort_distributions", lambda: {"onnxruntime-gpu"})
    install(monkeypatch, FakeOrt([CUDA, CPU], starts=[CPU]))
    profile = load_profile("cuda-fp16").replace(parity_n=2, batch_sizes=(1, 2))
    cells = ImageSet(np.zeros((2, 450, 450, 3), np.uint8), None, "test cells", "prelim")
    ref = ReferenceOutputs(np.zeros(2), np.full(2, 0.5, np.float32), 0.5)
    check = check_engine("cuda", model, profile, cells, ref)
    assert check.status == "skipped", check.line()
    assert "CUDAExecutionProvider did not start" in (check.reason or "")
    assert check.to_dict()["status"].startswith("skipped: ")
