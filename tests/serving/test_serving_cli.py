"""The serving and cluster commands' command line: what they write and their exit codes (no Ray started)."""

from __future__ import annotations

from runtime_support import build_onnx
from typer.testing import CliRunner

from edgeleuk.cli import app

runner = CliRunner()


def test_serving_repo_writes_triton_repository(tmp_path):
    model = build_onnx(tmp_path / "m.onnx")
    result = runner.invoke(app, ["serving-repo", str(tmp_path / "repo"), "-m", str(model), "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "repo" / "triton" / "edgeleuk" / "config.pbtxt").is_file()
    assert "no server was started" in result.output and "deprecated" not in result.output


def test_serving_repo_keeps_the_deprecated_onnx_flag_with_a_note(tmp_path):
    model = build_onnx(tmp_path / "m.onnx")
    result = runner.invoke(app, ["serving-repo", str(tmp_path / "repo"), "--onnx", str(model)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "repo" / "triton" / "edgeleuk" / "1" / "model.onnx").is_file()
    assert "--onnx and --ir are deprecated; use --model" in result.output


def test_serving_repo_without_models_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["serving-repo", str(tmp_path / "repo")])
    assert result.exit_code == 2 and "give at least one --model" in result.output
    assert not (tmp_path / "repo").exists()


def test_serve_and_cluster_refuse_a_missing_model_before_starting_ray(tmp_path):
    missing = str(tmp_path / "nope.onnx")
    for args in (["serve", "--model", missing],
                 ["predict", str(tmp_path), "--model", missing, "--cluster", "auto"],):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "model file not found" in result.output, args


def test_remote_backend_without_a_reachable_server_is_exit_2_naming_the_fix(tmp_path):
    import socket

    model = build_onnx(tmp_path / "m.onnx")
    (tmp_path / "cells").mkdir()
    from runtime_support import gray_cell, write_bmp

    write_bmp(tmp_path / "cells" / "a.bmp", gray_cell(100))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = ["predict", str(tmp_path / "cells"), "--model", str(model), "--backend", "remote",
            "--out", str(tmp_path / "out.csv")]
    no_server = runner.invoke(app, base)
    assert no_server.exit_code == 2 and "--server" in no_server.output and "edgeleuk serve" in no_server.output
    unreachable = runner.invoke(app, [*base, "--server", f"http://127.0.0.1:{port}", "--server-timeout", "2"])
    assert unreachable.exit_code == 2 and "cannot reach" in unreachable.output
    assert not (tmp_path / "out.csv").exists()  # no silent fallback to local inference


def test_auto_never_picks_the_remote_backend(tmp_path):
    from edgeleuk.runtime.classifier import Classifier
    from edgeleuk.runtime.registry import auto_order

    assert "remote" not in auto_order()
    clf = Classifier.load(build_onnx(tmp_path / "m.onnx"), "auto", server="http://127.0.0.1:9")
    assert clf.info.name != "remote"


def test_serve_refuses_the_remote_backend_before_starting_ray(tmp_path):
    result = runner.invoke(app, ["serve", "-m", str(build_onnx(tmp_path / "m.onnx")), "--backend", "remote"])
    assert result.exit_code == 2 and "engine of this machine" in result.output
