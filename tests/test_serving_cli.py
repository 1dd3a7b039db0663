"""The serving and cluster commands' command line: what they write and their exit codes (no Ray started)."""

from __future__ import annotations

from runtime_support import build_onnx
from typer.testing import CliRunner

from edgeleuk.cli import app

runner = CliRunner()


def test_serving_repo_writes_triton_repository(tmp_path):
    model = build_onnx(tmp_path / "m.onnx")
    result = runner.invoke(app, ["serving-repo", str(tmp_path / "repo"), "--onnx", str(model), "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "repo" / "triton" / "edgeleuk" / "config.pbtxt").is_file()
    assert "neither server was started" in result.output


def test_serving_repo_without_models_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["serving-repo", str(tmp_path / "repo")])
    assert result.exit_code == 2 and "--onnx" in result.output
    assert not (tmp_path / "repo").exists()


def test_serve_and_cluster_refuse_a_missing_model_before_starting_ray(tmp_path):
    missing = str(tmp_path / "nope.onnx")
    for args in (["serve", missing],
                 ["predict", str(tmp_path), "--model", missing, "--cluster", "auto"],):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "model file not found" in result.output, args
