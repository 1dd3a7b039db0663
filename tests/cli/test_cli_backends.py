"""calibrate and serve take the backend flags from the registry, like predict, watch and bench.

``calibrate --backend remote --server URL`` runs against a stand-in for ``edgeleuk serve``: the
server's own :class:`~edgeleuk.serving.server.ModelService` behind the standard library's HTTP
server (no Ray started).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.runtime.registry import option_fields
from edgeleuk.serving import server as server_mod

runner = CliRunner()


@pytest.fixture()
def server_url(model: Path) -> Iterator[str]:
    """``edgeleuk serve``'s routes for ``model`` on a local port, answered by its ModelService."""
    service = server_mod.ModelService(str(model), "cpu", 1)

    async def infer(image: Any) -> tuple[float, float]:
        return service.infer([image])[0]

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, payload = asyncio.run(
                service.respond(method, self.path, self.headers.get("content-type"), body, infer)
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's names)
            self._answer("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._answer("POST")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


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
