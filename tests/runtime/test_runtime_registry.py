"""Backend registry: explicit choices, auto selection and its log line, clear errors."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import typer.main
from runtime_support import build_ir, build_onnx, expected_logit, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.io.formats import ONNX
from edgeleuk.runtime import BACKENDS, BackendOptions, backend_options, choose_backend, open_backend, registry
from edgeleuk.runtime import cuda as cuda_mod
from edgeleuk.runtime.base import Backend, BackendInfo, BenchVariant, OptionsRecord, option
from edgeleuk.runtime.openvino import OpenVINOBackend, OpenVINOOptions
from edgeleuk.runtime.registry import auto_order, explicit_only, readers

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
    assert list(BACKENDS) == ["cpu", "openvino", "cuda", "remote"]  # registration order: bench's row order
    assert len(set(BACKENDS.values())) == 4
    assert auto_order() == ("cuda", "openvino", "cpu")  # from each backend's auto_rank
    assert explicit_only() == ("remote",)  # auto_rank None: never picked by auto
    assert readers("onnx") == ("cuda", "openvino", "cpu", "remote") and readers("openvino") == ("openvino", "remote")


def test_flat_option_fields_reach_their_backend_record() -> None:
    opts = backend_options(threads=2, precision="bf16", tensorrt=True)
    assert opts.threads == 2
    assert opts.of(OpenVINOBackend) == OpenVINOOptions(precision="bf16")
    assert opts.of(cuda_mod.CudaBackend).tensorrt is True
    assert BackendOptions().of(OpenVINOBackend) == OpenVINOOptions()  # defaults when none given
    with pytest.raises(UsageError, match="unknown backend option.*colour; known: threads, views_input, precision"):
        backend_options(colour="red")


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
        cuda_mod.CudaBackend(models["onnx"], BackendOptions())


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
        reason = cuda_mod.CudaBackend.availability() if registry.gpu_visible() else registry.NO_GPU
        assert f"skipped cuda: {reason}" in why


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_gives_gpu_install_advice_only_where_a_gpu_is_seen(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path], gpu: bool
) -> None:
    """A CPU-only machine never hears how to install GPU wheels; a GPU machine without them does."""
    advice = "onnxruntime-gpu is not installed: pip install 'edgeleuk[gpu]'"
    monkeypatch.setattr(cuda_mod.CudaBackend, "availability", classmethod(lambda cls: advice))
    monkeypatch.setattr(registry, "gpu_visible", lambda: gpu)
    backend, why = choose_backend(models["onnx"], "auto")
    assert backend.name != "cuda"
    assert (f"skipped cuda: {advice}" in why) is gpu
    assert ("edgeleuk[gpu]" in why) is gpu and (registry.NO_GPU in why) is not gpu


def test_auto_falls_back_to_cpu_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    monkeypatch.setattr(cuda_mod.CudaBackend, "availability", classmethod(lambda cls: "no GPU here"))
    monkeypatch.setattr(OpenVINOBackend, "availability", classmethod(lambda cls: "openvino is not installed"))
    monkeypatch.setattr(registry, "gpu_visible", lambda: True)  # the backend's own reason, as on a GPU machine
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


def test_tensorrt_flag_reaches_the_cuda_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                models: dict[str, Path]) -> None:
    """``predict --tensorrt`` puts a CudaOptions(tensorrt=True) record in front of the cuda backend."""
    from edgeleuk.cli import app

    seen = {}

    def fake_init(self, model_path: Path, options: BackendOptions) -> None:
        seen["options"] = options.of(type(self))
        raise BackendUnavailable("stop here")

    monkeypatch.setattr(cuda_mod.CudaBackend, "availability", classmethod(lambda cls: None))
    monkeypatch.setattr(cuda_mod.CudaBackend, "__init__", fake_init)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.bmp").write_bytes(b"")
    args = ["predict", str(tmp_path / "in"), "--model", str(models["onnx"]), "--backend", "cuda",
            "--out", str(tmp_path / "p.csv"), "--tensorrt"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "stop here" in result.output
    assert seen["options"] == cuda_mod.CudaOptions(tensorrt=True)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu with a working CUDAExecutionProvider")
def test_cuda_backend_runs_on_the_gpu(models: dict[str, Path], batch: np.ndarray) -> None:
    backend = open_backend(models["onnx"], "cuda")
    assert backend.info().providers[0] == "CUDAExecutionProvider"
    logits, _ = backend.run(batch)
    np.testing.assert_allclose(logits, expected_logit(batch), atol=1e-3)


# --- derivation: a backend registered once shows up everywhere ------------------------------------

@dataclasses.dataclass(frozen=True)
class StubOptions(OptionsRecord):
    stub_level: str = option("low", "stub: how hard to try.", ("low", "high"))


class StubBackend(Backend):
    """A backend that computes the tiny model's answer in numpy; ``auto`` tries it first."""

    name = "stub"
    reads = ("onnx",)
    auto_rank = 1
    Options = StubOptions
    libraries = ("stub-engine",)

    @classmethod
    def availability(cls) -> str | None:
        return None

    @classmethod
    def bench_variants(cls, precision: str) -> tuple[BenchVariant, ...]:
        return (BenchVariant("hard", None, {"stub_level": "high"}),)

    opened_with: ClassVar[list[StubOptions]] = []

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        self.model_path, self.own = Path(model_path), options.of(type(self))
        self.opened_with.append(self.own)

    def metadata(self) -> dict[str, str]:
        return ONNX.read_metadata(self.model_path)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = expected_logit(batch).astype(np.float32)
        return logits, (1 / (1 + np.exp(-logits))).astype(np.float32)

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, "stub 0", ("numpy",), "fp32")


def _reload_cli() -> None:
    """Build the CLI again: it derives its choices and flags from the registry at import."""
    import edgeleuk.cli
    from edgeleuk.cli import base, deployed, serving, training

    for module in (base, deployed, training, serving, edgeleuk.cli):  # the app first, then its commands
        importlib.reload(module)


@pytest.fixture()
def stub_registered() -> Iterator[None]:
    registry.register(StubBackend)
    _reload_cli()
    try:
        yield
    finally:
        del registry.BACKENDS["stub"]
        _reload_cli()


def test_a_registered_backend_appears_in_registry_auto_cli_bench_and_gate(
    stub_registered: None, models: dict[str, Path], tmp_path: Path
) -> None:
    import edgeleuk.cli
    from edgeleuk.bench.cases import ModelFile, plan_cases
    from edgeleuk.bench.machine import libraries
    from edgeleuk.bench.options import BenchOptions
    from edgeleuk.bench.runner import availability
    from edgeleuk.exporting.profile import load_profile

    assert registry.BACKENDS["stub"] is StubBackend
    assert auto_order()[0] == "stub" and readers("onnx")[0] == "stub" and readers("openvino") == ("openvino", "remote")
    backend, why = choose_backend(models["onnx"], "auto")
    assert backend.name == "stub" and "numpy" in why
    assert backend_options(stub_level="high").of(StubBackend) == StubOptions("high")
    # CLI: choices and the backend's own flag come from the registry.
    assert "stub" in {c.value for c in edgeleuk.cli.BackendChoice}
    assert "stub" in {c.value for c in edgeleuk.cli.BenchBackend}
    (flag,) = [p for p in typer.main.get_command(edgeleuk.cli.app).commands["predict"].params
               if p.name == "stub_level"]
    assert flag.opts == ["--stub-level"] and flag.help == "stub: how hard to try."
    # predict through the CLI with the flag: the stub runs with its record.
    write_bmp(tmp_path / "in" / "a.bmp", gray_cell(200))
    out = tmp_path / "p.csv"
    args = ["predict", str(tmp_path / "in"), "--model", str(models["onnx"]), "--backend", "stub",
            "--stub-level", "high", "--out", str(out)]
    result = CliRunner().invoke(edgeleuk.cli.app, args)
    assert result.exit_code == 0, result.output
    assert StubBackend.opened_with[-1] == StubOptions("high") and "on stub" in result.output and out.is_file()
    # bench: a row per backend that reads the file, plus the declared variant.
    mf = ModelFile(models["onnx"], "onnx", "fp32", 1, None, 0.5)
    labels = [c.label for c in plan_cases([mf], "all", True, False, availability())]
    assert "stub fp32" in labels and "stub hard" in labels
    assert BenchOptions(backend="stub").backend == "stub"
    assert "stub-engine" in libraries()  # bench's machine header lists its engine's version
    # export: a profile may gate on it.
    assert load_profile({"name": "p", "gate_engines": ["stub", "cpu"]}).gate_engines == ("stub", "cpu")


def test_registration_refuses_clashes() -> None:
    class Twin(StubBackend):
        name = "cpu"

    class SameFlag(StubBackend):
        name = "other"

        @dataclasses.dataclass(frozen=True)
        class Options(OptionsRecord):
            precision: str = "f32"

    with pytest.raises(ValueError, match="reserved, taken"):
        registry.register(Twin)
    with pytest.raises(ValueError, match="option 'precision' is already declared \\(openvino\\)"):
        registry.register(SameFlag)
    assert "other" not in registry.BACKENDS and registry.BACKENDS["cpu"] is not Twin
