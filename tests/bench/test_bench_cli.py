"""`edgeleuk bench` end to end on the tiny network: table, JSON, failing gate, unavailable backends.

Timings are never asserted: runs use --quick and a few cells. Everything here is SYNTHETIC.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeleuk.bench.options import BenchOptions
from edgeleuk.bench.runner import run_bench
from edgeleuk.cli import app
from edgeleuk.runtime import BACKENDS
from edgeleuk.runtime.registry import NO_GPU, gpu_visible

runner = CliRunner()
CUDA_REASON = BACKENDS["cuda"].availability()


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another random tiny checkpoint: different weights from the one the model came from."""
    import torch

    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "other.pt"
    save_checkpoint(path, create_model("seresnext_tiny").state_dict(), ModelMeta(arch="seresnext_tiny"))
    return path


def _bench(*args: str):
    return runner.invoke(app, ["bench", "--quick", "--n", "4", "--batch", "2", *args])


def test_bench_all_prints_table_writes_json_and_lists_cuda_as_unavailable(
    tiny_onnx: Path, tiny_checkpoint: Path, synth_root: Path, tmp_path: Path,
):
    out = tmp_path / "bench.json"
    res = _bench("--model", str(tiny_onnx), "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--backend", "all", "--json", str(out))
    assert res.exit_code == 0, res.output
    assert "### Speed" in res.output and "### Parity" in res.output
    assert "SYNTHETIC" in res.output
    assert "| torch eager fp32 (checkpoint) | ok |" in res.output
    assert "| cpu fp32 (tiny.onnx) | ok |" in res.output
    record = json.loads(out.read_text())
    rows = {r["row"]: r for r in record["rows"]}
    assert record["exit_code"] == 0 and record["synthetic"] and record["parity_checked"]
    assert rows["cpu fp32"]["parity"]["agreement"] == 1.0
    assert rows["cpu fp32"]["metrics"]["f1"] is not None  # prelim split is labelled
    assert rows["cpu fp32"]["measurement"]["latency"]["runs"] >= 1
    assert rows["cpu fp32"]["speedup_latency"] > 0
    if CUDA_REASON:
        assert rows["cuda fp32"]["status"] == "unavailable" and rows["cuda fp32"]["reason"]
        assert "cuda fp32 (tiny.onnx): unavailable" in res.output
    if not gpu_visible():  # no GPU here: the row says so, with no advice to install GPU wheels
        assert rows["cuda fp32"]["reason"] == NO_GPU and "edgeleuk[gpu]" not in res.output


def test_bench_gives_the_gpu_install_advice_when_cuda_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeleuk.bench.runner import availability
    from edgeleuk.runtime import registry
    from edgeleuk.runtime.cuda import CudaBackend

    advice = "onnxruntime-gpu is not installed: pip install 'edgeleuk[gpu]'"
    monkeypatch.setattr(CudaBackend, "availability", classmethod(lambda cls: advice))
    monkeypatch.setattr(registry, "gpu_visible", lambda: False)
    assert availability("all")["cuda"] == NO_GPU and availability("cuda")["cuda"] == advice
    monkeypatch.setattr(registry, "gpu_visible", lambda: True)
    assert availability("all")["cuda"] == advice  # a GPU is there: then the advice helps


def test_bench_gate_fails_against_another_checkpoint(tiny_onnx: Path, other_checkpoint: Path):
    # In-process (isolate=False) to keep the test quick; the CLI tests above cover the subprocess path.
    opts = BenchOptions(backend="cpu", n=4, batch=2, quick=True, isolate=False, throughput_mode=False)
    report = run_bench(tiny_onnx, checkpoint=other_checkpoint, options=opts)
    md = report.to_markdown()
    assert report.exit_code() == 1
    assert [r.status for r in report.rows] == ["ok", "parity failed"]
    assert "| cpu fp32 (tiny.onnx) | parity failed |" in md and "PARITY FAILED" in md
    assert "not from other.pt" in md  # the file records which checkpoint it came from


@pytest.mark.skipif(CUDA_REASON is None, reason="CUDA is available here; the unavailable path cannot be shown")
def test_bench_explicit_cuda_without_gpu_exits_2_with_the_fix(tiny_onnx: Path):
    res = _bench("--model", str(tiny_onnx), "--backend", "cuda")
    assert res.exit_code == 2
    assert "--backend cuda is not available here" in res.output
    assert "pip install" in res.output


def test_bench_without_checkpoint_says_parity_not_checked(tiny_onnx: Path, tmp_path: Path):
    out = tmp_path / "b.json"
    res = _bench("--model", str(tiny_onnx), "--backend", "cpu", "--json", str(out))
    assert res.exit_code == 0, res.output
    assert "PARITY NOT CHECKED" in res.output
    assert "unavailable: no --checkpoint" in res.output
    assert json.loads(out.read_text())["parity_checked"] is False


def test_bench_torch_backend_needs_a_checkpoint(tiny_onnx: Path):
    res = _bench("--model", str(tiny_onnx), "--backend", "torch")
    assert res.exit_code == 2 and "--checkpoint" in res.output


def test_bench_missing_model_is_a_usage_error(tmp_path: Path):
    res = _bench("--model", str(tmp_path / "nope.onnx"))
    assert res.exit_code == 2 and "not found" in res.output


def test_bench_with_one_class_cells_prints_n_a_for_undefined_metrics(tiny_onnx: Path, tmp_path: Path):
    # One cell is one class: specificity or sensitivity is undefined and must not crash the row.
    out = tmp_path / "b.json"
    res = runner.invoke(app, ["bench", "--quick", "--n", "1", "--batch", "1", "--model", str(tiny_onnx),
                              "--backend", "cpu", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "n/a" in res.output
    metrics = [r["metrics"] for r in json.loads(out.read_text())["rows"] if r.get("metrics")]
    assert metrics and all(None in (m["sensitivity"], m["specificity"]) for m in metrics)
