"""calibrate and serve take the backend flags from the registry, like predict, watch and bench.

``calibrate --backend remote --server URL`` runs against a stand-in for ``edgeleuk serve``: the
server's own :class:`~edgeleuk.serving.server.ModelService` behind the standard library's HTTP
server (no Ray started).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from fake_server import serving_service
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.runtime.registry import option_fields
from edgeleuk.serving import server as server_mod

runner = CliRunner()


@pytest.fixture()
def server_url(model: Path) -> Iterator[str]:
    """``edgeleuk serve``'s routes for ``model`` on a local port, answered by its ModelService."""
    with serving_service(server_mod.ModelService(str(model), "cpu", 1)) as url:
        yield url


def test_calibrate_and_serve_have_every_backend_flag() -> None:
    group = typer.main.get_command(app)
    fields = {f.name for _, f in option_fields()}
    for command in ("predict", "watch", "bench", "calibrate", "serve"):
        names = {p.name for p in group.commands[command].params}
        assert fields <= names, (command, fields - names)


def test_calibrate_on_a_remote_server(model: Path, labelled: Path, server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "c.onnx"
    result = runner.invoke(app, ["calibrate", "-m", str(model), "--data", str(labelled), "--out", str(out),
                                 "--backend", "remote", "--server", server_url, "--server-timeout", "30",
                                 "--allow-small"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "calibrated" in result.stdout
    assert "the remote backend computes no single rotations" in result.stdout  # threshold only, said so


def test_calibrate_remote_without_server_names_the_flag(model: Path, labelled: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["calibrate", "-m", str(model), "--data", str(labelled),
                                 "--out", str(tmp_path / "c.onnx"), "--backend", "remote", "--allow-small"])
    assert result.exit_code == 2 and "--server" in result.stderr


def test_serve_passes_backend_flags_to_every_replica(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[server_mod.ServeOptions] = []
    monkeypatch.setattr(server_mod, "serve_forever", lambda path, opts, echo: started.append(opts))
    result = runner.invoke(app, ["serve", "-m", str(model), "--backend", "openvino", "--hint", "throughput"])
    assert result.exit_code == 0, result.output
    assert started[0].engine_fields["hint"] == "throughput" and started[0].backend == "openvino"

    loads: list[dict[str, Any]] = []
    real = server_mod.Classifier.load
    monkeypatch.setattr(server_mod.Classifier, "load",
                        lambda *a, **k: loads.append(k) or real(*a, **k))
    server_mod.ModelService(str(model), "openvino", 1, dict(started[0].engine_fields))
    assert loads[0]["hint"] == "throughput" and loads[0]["threads"] == 1
