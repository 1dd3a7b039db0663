"""Backend registry: explicit choices, auto selection and its log line, clear errors."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
from runtime_support import build_ir, build_onnx, expected_logit, gray_cell

from edgeleuk.errors import BackendUnavailable, UsageError
from edgeleuk.runtime import BACKENDS, choose_backend, open_backend
from edgeleuk.runtime import cuda as cuda_mod
from edgeleuk.runtime.openvino import OpenVINOBackend

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_CUDA = cuda_mod.CudaBackend.availability() is None


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    onnx_path = build_onnx(folder / "tiny.onnx")
    return {"onnx": onnx_path, "ir": build_ir(onnx_path, folder / "tiny.xml")}


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.stack([gray_cell(level, seed=i) for i, level in enumerate((15, 100, 128, 180, 245))])


def test_registry_holds_one_class_per_backend() -> None:
    assert list(BACKENDS) == ["cuda", "openvino", "cpu"]
    assert len(set(BACKENDS.values())) == 3


@pytest.mark.parametrize("name", ["cpu", "openvino"])
def test_backend_matches_the_graph(models: dict[str, Path], batch: np.ndarray, name: str) -> None:
    backend = open_backend(models["onnx"], name)
    logits, probs = backend.run(batch)
    assert logits.dtype == np.float32 and probs.dtype == np.float32 and logits.shape == (5,)
    np.testing.assert_allclose(logits, expected_logit(batch), atol=1e-4)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-expected_logit(batch))), atol=1e-5)
    assert backend.info().name == name


def test_cpu_and_openvino_agree(models: dict[str, Path], batch: np.ndarray) -> None:
    cpu = open_backend(models["onnx"], "cpu").run(batch)
    ov_onnx = open_backend(models["onnx"], "openvino").run(batch)
    ov_ir = open_backend(models["ir"], "openvino").run(batch)
    for other in (ov_onnx, ov_ir):
        np.testing.assert_allclose(other[0], cpu[0], atol=1e-4)
        np.testing.assert_allclose(other[1], cpu[1], atol=1e-5)


def test_cpu_reports_providers_read_back(models: dict[str, Path]) -> None:
    info = open_backend(models["onnx"], "cpu").info()
    assert info.providers == ("CPUExecutionProvider",)
    assert info.engine.startswith("onnxruntime ")
    assert info.precision == "fp32"  # from the export record


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_ir_on_an_onnx_runtime_backend_is_a_usage_error(models: dict[str, Path], name: str) -> None:
    with pytest.raises(UsageError, match="only the openvino backend runs it") as err:
        open_backend(models["ir"], name)
    assert not isinstance(err.value, BackendUnavailable)


def test_missing_or_foreign_model_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="model file not found"):
        open_backend(tmp_path / "nope.onnx", "cpu")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="unsupported model file"):
        open_backend(tmp_path / "model.pt")
    (tmp_path / "lonely.xml").write_text("<net/>")
    with pytest.raises(UsageError, match="weights lonely.bin are missing"):
        open_backend(tmp_path / "lonely.xml", "openvino")


def test_unknown_backend_name(models: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="unknown backend 'tpu'"):
        open_backend(models["onnx"], "tpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a working CUDA provider")
def test_explicit_cuda_without_gpu_wheel_names_the_fix(models: dict[str, Path]) -> None:
    with pytest.raises(BackendUnavailable) as err:
        open_backend(models["onnx"], "cuda")
    assert "onnxruntime-gpu is not installed" in str(err.value)
    assert "pip install 'edgeleuk[gpu]'" in str(err.value)
    assert err.value.exit_code == 2


def test_cuda_refuses_when_both_wheels_are_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_mod, "installed_ort_distributions", lambda: {"onnxruntime", "onnxruntime-gpu"})
    reason = cuda_mod.CudaBackend.availability()
    assert reason is not None
    assert "both onnxruntime and onnxruntime-gpu are installed: uninstall onnxruntime" in reason


def test_cuda_refuses_a_session_that_fell_back_to_cpu(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    """ORT quietly runs on CPU when the CUDA provider cannot start; the backend must say so."""
    monkeypatch.setattr(cuda_mod.CudaBackend, "availability", classmethod(lambda cls: None))
    monkeypatch.setattr(
        cuda_mod.CudaBackend, "_providers", lambda self, ort, options: ["CPUExecutionProvider"]
    )
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider did not start"):
        cuda_mod.CudaBackend(models["onnx"], cuda_mod.BackendOptions())


def _expected_auto() -> str:
    if HAS_CUDA:
        return "cuda"
    return "openvino" if HAS_OPENVINO else "cpu"


def test_auto_picks_what_is_installed_and_logs_why(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="edgeleuk.runtime.registry"):
        backend, why = choose_backend(models["onnx"], "auto")
    expected = _expected_auto()
    assert backend.name == expected
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend auto ->")]
    assert line == [f"backend auto -> {expected}: {why}"]
    if expected != "cuda":
        assert f"skipped cuda: {cuda_mod.CudaBackend.availability()}" in why


def test_auto_falls_back_to_cpu_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    monkeypatch.setattr(cuda_mod.CudaBackend, "availability", classmethod(lambda cls: "no GPU here"))
    monkeypatch.setattr(OpenVINOBackend, "availability", classmethod(lambda cls: "openvino is not installed"))
    backend, why = choose_backend(models["onnx"], "auto")
    assert backend.name == "cpu"
    assert "skipped cuda: no GPU here; openvino: openvino is not installed" in why


def test_auto_with_nothing_available_raises(monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]) -> None:
    monkeypatch.setattr(OpenVINOBackend, "availability", classmethod(lambda cls: "openvino is not installed"))
    with pytest.raises(
        BackendUnavailable, match="no backend can run tiny.xml: openvino: openvino is not installed"
    ):
        choose_backend(models["ir"], "auto")


def test_explicit_unavailable_backend_does_not_fall_back(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    monkeypatch.setattr(
        OpenVINOBackend, "availability", classmethod(lambda cls: "openvino is not installed: pip")
    )
    with pytest.raises(
        BackendUnavailable, match="backend openvino is not available: openvino is not installed"
    ):
        open_backend(models["onnx"], "openvino")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu with a working CUDAExecutionProvider")
def test_cuda_backend_runs_on_the_gpu(models: dict[str, Path], batch: np.ndarray) -> None:
    backend = open_backend(models["onnx"], "cuda")
    assert backend.info().providers[0] == "CUDAExecutionProvider"
    logits, _ = backend.run(batch)
    np.testing.assert_allclose(logits, expected_logit(batch), atol=1e-3)
