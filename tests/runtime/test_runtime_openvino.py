"""OpenVINO backend: explicit precision read back, hint and threads, devices, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from runtime_support import build_ir, build_onnx, gray_cell

from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.runtime import BackendOptions, backend_options, open_backend
from edgeleuk.runtime.openvino import OpenVINOOptions, compile_config

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ov")
    return build_ir(build_onnx(folder / "tiny.onnx"), folder / "tiny.xml")


def test_fp32_is_asked_for_explicitly_and_read_back(model: Path) -> None:
    assert compile_config(OpenVINOOptions())["INFERENCE_PRECISION_HINT"] == "f32"
    info = open_backend(model, "openvino").info()
    assert info.precision == "f32"
    assert info.providers == ("CPU",)
    assert info.details["hint"] == "LATENCY"


def test_bf16_only_when_requested(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgeleuk.bench.machine import cpu_info

    assert compile_config(OpenVINOOptions(precision="bf16"))["INFERENCE_PRECISION_HINT"] == "bf16"
    info = open_backend(model, "openvino", backend_options(precision="bf16")).info()
    # OpenVINO's CPU plugin computes in bf16 exactly where the CPU has native bf16 instructions
    # (AVX512-BF16 or AMX-BF16); elsewhere it runs f32 and the backend says so in a warning.
    if cpu_info().bf16:
        assert info.precision == "bf16"
    else:
        assert info.precision == "f32" and "asked OpenVINO for bf16" in caplog.text


def test_hint_and_threads_reach_the_compiled_model(model: Path) -> None:
    info = open_backend(model, "openvino", backend_options(hint="throughput", threads=1)).info()
    assert info.details["hint"] == "THROUGHPUT"
    assert info.details["threads"] == "1"


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="precision"):
        OpenVINOOptions(precision="int4")
    with pytest.raises(UsageError, match="hint"):
        backend_options(hint="fast")


def test_missing_device_names_what_is_there(model: Path) -> None:
    with pytest.raises(BackendUnavailable, match="OpenVINO device 'NPU7' not found; available: .*CPU"):
        open_backend(model, "openvino", BackendOptions(engine={"openvino": OpenVINOOptions(device="npu7")}))


def test_metadata_comes_from_rt_info(model: Path) -> None:
    raw = open_backend(model, "openvino").metadata()
    assert set(raw) == {"edgeleuk.meta", "edgeleuk.export"}


def test_concurrent_runs_match_sequential(model: Path) -> None:
    backend = open_backend(model, "openvino")
    batches = [np.stack([gray_cell(level + k, seed=k)]) for k, level in enumerate(range(20, 240, 20))]
    sequential = [backend.run(b)[0] for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda b: backend.run(b)[0], batches))
    for s, p in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(s, p)
