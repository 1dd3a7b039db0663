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


def _fixed_batch(src, dst):
    """``src`` with its batch axis fixed to 1: good metadata, a graph that breaks the contract."""
    import onnx

    graph = onnx.load(str(src))
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(graph, str(dst))
    return dst


def test_serve_refuses_a_model_breaking_the_graph_contract_in_one_paragraph_before_ray(tmp_path):
    ray = __import__("pytest").importorskip("ray")
    bad = _fixed_batch(build_onnx(tmp_path / "m.onnx"), tmp_path / "fixed.onnx")
    result = runner.invoke(app, ["serve", "-m", str(bad), "--backend", "cpu"])
    assert result.exit_code == 2 and "does not follow the edgeleuk model contract" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not ray.is_initialized()


def test_serve_refuses_other_machines_without_a_token_unless_insecure(tmp_path, monkeypatch):
    from edgeleuk.serving.server import ServeOptions

    monkeypatch.delenv("EDGELEUK_TOKEN", raising=False)
    model = str(build_onnx(tmp_path / "m.onnx"))
    for host in ("0.0.0.0", "192.168.1.20", "gpu-box.lab"):
        result = runner.invoke(app, ["serve", "-m", model, "--host", host])
        assert result.exit_code == 2 and "--token-file" in result.output and "--insecure" in result.output, host
    assert ServeOptions(host="0.0.0.0", insecure=True).host == "0.0.0.0"
    assert ServeOptions(host="0.0.0.0", token_sha256="0" * 64).scheme == "http"
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert ServeOptions(host=host).host == host


def test_serve_checks_token_and_tls_files_before_starting(tmp_path):
    model = str(build_onnx(tmp_path / "m.onnx"))
    (tmp_path / "short").write_text("abc\n")
    short = runner.invoke(app, ["serve", "-m", model, "--token-file", str(tmp_path / "short")])
    assert short.exit_code == 2 and "at least 16" in short.output
    half = runner.invoke(app, ["serve", "-m", model, "--tls-cert", str(tmp_path / "short")])
    assert half.exit_code == 2 and "both --tls-cert and --tls-key" in half.output
    missing = runner.invoke(app, ["serve", "-m", model, "--tls-cert", str(tmp_path / "no.crt"),
                                  "--tls-key", str(tmp_path / "no.key")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_tls_files_reach_ray_serves_http_options(tmp_path):
    from edgeleuk.serving.server import ServeOptions, http_options

    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    opts = ServeOptions(tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"), port=8443)
    assert opts.scheme == "https"
    assert http_options(opts) == {"host": "127.0.0.1", "port": 8443, "ssl_certfile": str(tmp_path / "c.pem"),
                                  "ssl_keyfile": str(tmp_path / "k.pem")}
