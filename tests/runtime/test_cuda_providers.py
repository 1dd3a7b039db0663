"""The ``cuda`` backend's session settings and checks, against a stand-in onnxruntime (no GPU needed).

What is checked is what the backend asks ONNX Runtime for and what it does with the answer:
fallback disabled, TF32 off, ``preload_dlls`` called, TensorRT's options, TensorRT that does
not start refused, and availability decided by the module's providers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_ort import CPU, CUDA, TENSORRT, FakeOrt, install
from runtime_support import EXPORT_INFO, build_onnx

from edgeleuk.core.errors import BackendUnavailable
from edgeleuk.io.formats import write_onnx_metadata
from edgeleuk.io.modelfile import read_raw_metadata
from edgeleuk.runtime import BackendOptions, backend_options, open_backend
from edgeleuk.runtime import cuda as cuda_mod
from edgeleuk.runtime.cuda import CudaBackend

GPU_WHEEL = {"onnxruntime-gpu"}


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("cuda") / "tiny.onnx")


@pytest.fixture(scope="module")
def fp16_model(fp32_model: Path) -> Path:
    """The same file, its metadata saying fp16 (what the cuda-fp16 profile writes)."""
    strings = read_raw_metadata(fp32_model)
    strings["edgeleuk.export"] = json.dumps({**EXPORT_INFO, "precision": "fp16"})
    dest = fp32_model.with_name("tiny16.onnx")
    write_onnx_metadata(fp32_model, dest, strings)
    return dest


@pytest.fixture
def gpu_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed wheels say onnxruntime-gpu (so only the fake module's answers matter)."""
    monkeypatch.setattr(cuda_mod, "installed_ort_distributions", lambda: set(GPU_WHEEL))


def _open(model: Path, **fields: object) -> CudaBackend:
    return CudaBackend(model, backend_options(**fields) if fields else BackendOptions())


def test_session_fallback_is_disabled(monkeypatch, gpu_wheel, fp32_model: Path) -> None:
    """ONNX Runtime 1.18-1.22 ignore enable_fallback=0; disable_fallback() works in every version."""
    ort = install(monkeypatch, FakeOrt([CUDA, CPU]))
    _open(fp32_model)
    assert ort.sessions[0].fallback_disabled


def test_cuda_runs_without_tf32(monkeypatch, gpu_wheel, fp32_model: Path) -> None:
    """TF32 would put ~1e-3 relative error on fp32 Conv/MatMul; an fp32 file is gated at 1e-4."""
    ort = install(monkeypatch, FakeOrt([CUDA, CPU]))
    _open(fp32_model)
    assert ort.sessions[0].options_of(CUDA) == {"use_tf32": "0"}


def test_preload_dlls_is_called_before_the_session(monkeypatch, gpu_wheel, fp32_model: Path, capsys) -> None:
    """Pip-installed CUDA/cuDNN load only through preload_dlls() when torch is not imported."""
    ort = install(monkeypatch, FakeOrt([CUDA, CPU]))
    ort.preload_dlls = lambda **kwargs: (ort.events.append("preload_dlls"), print("Failed to load libcudnn.so.9"))
    _open(fp32_model)
    assert ort.events == ["preload_dlls", "session"]
    assert "libcudnn" not in capsys.readouterr().out  # what it prints goes to the log, not stdout
    older = install(monkeypatch, FakeOrt([CUDA, CPU], preload=False))  # onnxruntime before 1.21
    _open(fp32_model)
    assert older.events == ["session"]


def test_tensorrt_that_does_not_start_is_an_error(monkeypatch, gpu_wheel, fp32_model: Path) -> None:
    """Every GPU wheel lists TensorRT; without its libraries the session quietly runs on CUDA."""
    install(monkeypatch, FakeOrt([TENSORRT, CUDA, CPU], starts=[CUDA, CPU]))
    with pytest.raises(BackendUnavailable, match=f"--tensorrt: {TENSORRT} did not start.*drop --tensorrt"):
        _open(fp32_model, tensorrt=True)


def test_tensorrt_missing_from_the_build_is_an_error(monkeypatch, gpu_wheel, fp32_model: Path) -> None:
    ort = install(monkeypatch, FakeOrt([CUDA, CPU]))
    with pytest.raises(BackendUnavailable, match=f"has no {TENSORRT}.*drop --tensorrt"):
        _open(fp32_model, tensorrt=True)
    assert ort.sessions == []


@pytest.mark.parametrize(("model", "fp16"), [("fp32_model", "False"), ("fp16_model", "True")])
def test_tensorrt_options(monkeypatch, gpu_wheel, tmp_path: Path, request, model: str, fp16: str) -> None:
    """fp16 for an fp16 file; one engine for batches 1-64, cached on disk across runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ort = install(monkeypatch, FakeOrt([TENSORRT, CUDA, CPU]))
    _open(request.getfixturevalue(model), tensorrt=True)
    opts = ort.sessions[0].options_of(TENSORRT)
    cache = tmp_path / "edgeleuk" / "tensorrt"
    assert opts["trt_fp16_enable"] == fp16
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(cache)
    assert opts["trt_timing_cache_path"] == str(cache) and cache.is_dir()
    assert opts["trt_profile_min_shapes"] == "image:1x450x450x3"
    assert opts["trt_profile_opt_shapes"] == "image:8x450x450x3"
    assert opts["trt_profile_max_shapes"] == "image:64x450x450x3"
    assert ort.sessions[0].options_of(CUDA) == {"use_tf32": "0"}
    assert [p[0] if isinstance(p, tuple) else p for p in ort.sessions[0].asked] == [TENSORRT, CUDA, CPU]
    _open(request.getfixturevalue(model))  # not asked: no TensorRT
    assert [p[0] if isinstance(p, tuple) else p for p in ort.sessions[1].asked] == [CUDA, CPU]


def test_tensorrt_profile_covers_the_views_entry(monkeypatch, gpu_wheel, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    opts = cuda_mod.tensorrt_options(build_onnx(tmp_path / "m.onnx"), views_input=True)
    assert opts["trt_profile_min_shapes"] == "image:1x450x450x3,views:1"
    assert opts["trt_profile_max_shapes"] == "image:64x450x450x3,views:8"


def test_a_cuda_build_named_onnxruntime_is_available(monkeypatch) -> None:
    """conda-forge and source builds install CUDA as 'onnxruntime': the providers decide."""
    monkeypatch.setattr(cuda_mod, "installed_ort_distributions", lambda: {"onnxruntime"})
    install(monkeypatch, FakeOrt([CUDA, CPU]))
    assert CudaBackend.availability() is None


def test_gpu_wheel_beside_the_cpu_wheel_is_available_when_the_gpu_build_is_imported(monkeypatch) -> None:
    """benchmarks/gpu/check.sh puts onnxruntime-gpu on PYTHONPATH before an installed CPU wheel."""
    monkeypatch.setattr(cuda_mod, "installed_ort_distributions", lambda: {"onnxruntime", "onnxruntime-gpu"})
    install(monkeypatch, FakeOrt([TENSORRT, CUDA, CPU]))
    assert CudaBackend.availability() is None


def test_a_cpu_build_names_the_fix(monkeypatch) -> None:
    monkeypatch.setattr(cuda_mod, "installed_ort_distributions", lambda: {"onnxruntime"})
    install(monkeypatch, FakeOrt([CPU]))
    reason = CudaBackend.availability()
    assert reason is not None and "has no CUDAExecutionProvider" in reason
    assert "pip uninstall -y onnxruntime && pip install 'edgeleuk[gpu]'" in reason


def test_cuda_that_does_not_start_names_the_build_cuda_version(monkeypatch, gpu_wheel, fp32_model: Path) -> None:
    install(monkeypatch, FakeOrt([CUDA, CPU], starts=[CPU]))
    with pytest.raises(BackendUnavailable, match="did not start.*CUDA 13.0 / cuDNN 9"):
        open_backend(fp32_model, "cuda")

