"""Float16 ONNX for CUDA: uint8 in, float32 out, float16 inside; numerics gated where CUDA exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeleuk.core.meta import ModelMeta
from edgeleuk.exporting import export_model, load_profile
from edgeleuk.exporting.graph import contract_problems, fp16_problems
from edgeleuk.runtime.cuda import CudaBackend

HAS_CUDA = CudaBackend.availability() is None


@pytest.fixture(scope="module")
def fp16_export(tiny_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    # Its own export: the cuda-fp16 profile, not the shared cpu-fp32 tiny model.
    prof = load_profile("cuda-fp16").replace(parity_n=6)
    return export_model(tiny_checkpoint, tmp_path_factory.mktemp("fp16") / "tiny16.onnx", prof, data=synth_root)


def test_fp16_graph_is_well_formed(fp16_export) -> None:
    model = onnx.load(str(fp16_export.path))
    onnx.checker.check_model(model, full_check=True)
    assert contract_problems(model, ModelMeta()) == []
    assert fp16_problems(model) == []
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    kinds = {t.data_type for t in model.graph.initializer if t.name in conv_weights}
    assert kinds == {onnx.TensorProto.FLOAT16}


def test_fp16_gate_records_cuda_status(fp16_export) -> None:
    checks = {c.engine: c for c in fp16_export.gate.checks}
    if HAS_CUDA:
        assert checks["cuda"].status == "passed"
    else:  # the cuda backend's own availability check gives the reason
        assert checks["cuda"].status == "skipped"
        reason = CudaBackend.availability()
        assert fp16_export.gate.to_dict()["checks"][0]["status"] == f"skipped: {reason}"
    # ONNX Runtime CPU still runs the file (fp16 nodes cast to float32): weights are checked everywhere.
    assert checks["cpu"].status == "passed" and checks["cpu"].parity.agreement >= 0.995


def test_fp32_graph_has_no_fp16_weights(tiny_checkpoint: Path) -> None:
    from edgeleuk.exporting.graph import export_onnx
    from edgeleuk.modeling.checkpoint import load_checkpoint

    assert fp16_problems(export_onnx(load_checkpoint(tiny_checkpoint), 17)) != []


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA device")
def test_fp16_runs_on_cuda_close_to_fp32(fp16_export) -> None:
    session = ort.InferenceSession(str(fp16_export.path), providers=["CUDAExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    images = np.random.default_rng(0).integers(0, 256, (5, 450, 450, 3), dtype=np.uint8)
    logit, prob = session.run(["logit", "prob"], {"image": images})
    assert logit.dtype == prob.dtype == np.float32 and logit.shape == (5,)
    cpu = ort.InferenceSession(str(fp16_export.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(logit, cpu.run(["logit"], {"image": images})[0], atol=5e-2)
