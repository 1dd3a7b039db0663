"""Ray end to end on one local node: ``serve`` over loopback HTTP.

``predict --cluster`` and ``sweep --cluster`` are tested on a multi-node cluster in ``test_multinode.py``.

One local Ray (2 CPUs, no dashboard) is shared by every test in this module; the server binds
127.0.0.1 only, with a token and TLS (a throwaway self-signed certificate), and the load tests are
bounded (8 clients, 200 requests; a smaller hostile mix). SYNTHETIC cells only.
"""

from __future__ import annotations

import csv
import http.client
import json
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from runtime_support import (
    build_onnx,
    expected_logit,
    gray_cell,
)

from edgeleuk.cli import app
from edgeleuk.runtime import wire
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.remote import ServerClient
from edgeleuk.serving.front import Limits, token_digest

pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow

LEVELS = (20, 60, 100, 126, 127, 128, 129, 160, 200, 240)
TOKEN = "ray-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Certificate, key and token file of the test server."""
    from tls_support import self_signed

    root = tmp_path_factory.mktemp("serve-secrets")
    cert, key = self_signed(root)
    (root / "token").write_text(TOKEN + "\n")
    return cert, key, root / "token"


class TestServe:
    """``edgeleuk serve`` on localhost with a token and TLS; the app is removed after this class."""

    @pytest.fixture(scope="class")
    def url(self, ray_cluster, model, secrets):
        from edgeleuk.serving.server import ServeOptions, start, stop

        cert, key, _ = secrets
        url = start(model, ServeOptions(backend="cpu", host="127.0.0.1", port=_free_port(), max_batch=8,
                                        token_sha256=token_digest(TOKEN), tls_cert=str(cert), tls_key=str(key),
                                        limits=Limits(body_timeout_s=10.0)))
        yield url
        stop()

    @pytest.fixture(scope="class")
    def client(self, url, secrets):
        return ServerClient(url, timeout=120, token=TOKEN, ca_file=str(secrets[0]))

    @pytest.fixture(scope="class")
    def secure_flags(self, url, secrets):
        return ["--server", url, "--server-token-file", str(secrets[2]), "--server-ca", str(secrets[0])]

    def test_answers_a_folder_like_local_predict(self, url, client, model, folder):
        assert url.startswith("https://")
        files = sorted(p for p in folder.iterdir() if p.is_file())
        local = Classifier.load(model, "cpu").predict_paths(files)
        for path, want in zip(files, local, strict=True):
            answer = client.predict_file(path.read_bytes())
            if not want.ok:  # bad file: 4xx with the same reason predict writes in its error row
                assert 400 <= answer.status < 500, path.name
                assert want.error in answer.payload["error"], path.name
                continue
            assert answer.status == 200, (path.name, answer.payload)
            (got,) = answer.payload["predictions"]
            assert abs(got["prob_all"] - want.prob_all) <= 1e-6, path.name
            assert got["label"] == want.label and tuple(got["adjustments"]) == want.adjustments, path.name
            assert got["threshold"] == 0.5 and answer.payload["file"] == "model.onnx"
            assert answer.payload["model"] == wire.model_id(wire.model_sha256(model))
            assert answer.payload["engine"] == "cpu-fp32"

    def test_bounded_load_loses_no_request(self, client):
        cells = [gray_cell(level, seed=i) for i, level in enumerate(LEVELS)]
        want = 1 / (1 + np.exp(-expected_logit(np.stack(cells))))

        def one(i: int) -> tuple[int, float]:
            answer = client.predict_tensor(cells[i % len(cells)][None])
            assert answer.status == 200, answer.payload
            return i, answer.payload["predictions"][0]["prob_all"]

        with ThreadPoolExecutor(max_workers=8) as pool:  # 8 concurrent clients
            results = list(pool.map(one, range(200)))
        assert len(results) == 200
        for i, prob in results:
            assert abs(prob - want[i % len(cells)]) <= 1e-5

    def test_malformed_request_gets_4xx_and_the_server_keeps_serving(self, client):
        bad = [
            client.request(wire.PREDICT, b"\x93NUMPY garbage", wire.NPY_TYPE),
            client.request(wire.PREDICT, b"{}", "application/json"),
            client.predict_tensor(np.zeros((1, 32, 32, 3), np.uint8)),
            client.request("/nowhere"),
        ]
        assert [a.status for a in bad] == [400, 415, 422, 404]
        assert all(a.payload["error"] for a in bad)
        assert client.request(wire.HEALTH).status == 200
        good = client.predict_tensor(gray_cell(200)[None])
        assert good.status == 200 and good.payload["predictions"][0]["label"] == "all"
        meta = client.request(wire.METADATA).payload
        assert meta["threshold"] == 0.5 and meta["backend"]["name"] == "cpu"

    def test_remote_backend_predicts_a_folder_like_local(self, url, secure_flags, model, folder, tmp_path):
        from typer.testing import CliRunner

        runner = CliRunner()
        common = [str(folder), "--model", str(model)]
        local = runner.invoke(app, ["predict", *common, "--backend", "cpu", "--out", str(tmp_path / "local.csv")])
        remote = runner.invoke(app, ["predict", *common, "--backend", "remote", *secure_flags,
                                     "--out", str(tmp_path / "remote.csv")])
        assert local.exit_code == 0 and remote.exit_code == 0, remote.output
        assert url in remote.output and "model model.onnx sha256:" in remote.output  # who answered
        want = list(csv.DictReader((tmp_path / "local.csv").open()))
        got = list(csv.DictReader((tmp_path / "remote.csv").open()))
        assert len(got) == len(want) == len(LEVELS) + 3 + 4
        for g, w in zip(got, want, strict=True):
            # Same rows, order, errors, labels and adjustments; the server batches differently, so the
            # probability may differ in its last bit (|dprob| <= 1e-6).
            g_prob, w_prob = g.pop("prob_all"), w.pop("prob_all")
            # The same model id and threshold; the engine is the server's, and each call has its own time.
            (g_engine, _), (w_engine, _) = (g.pop("engine"), g.pop("time_utc")), (w.pop("engine"), w.pop("time_utc"))
            assert g_engine.split(":")[0] == "remote" and w_engine == "cpu-fp32"
            assert g["model"] == wire.model_sha256(model)[:12]
            assert g == w
            assert (g_prob == w_prob == "") or abs(float(g_prob) - float(w_prob)) <= 1e-6

    def test_remote_backend_refuses_a_server_running_another_model(self, secure_flags, folder, tmp_path):
        from typer.testing import CliRunner

        other = build_onnx(tmp_path / "other.onnx", gain=6.0)
        result = CliRunner().invoke(app, ["predict", str(folder), "--model", str(other), "--backend", "remote",
                                          *secure_flags, "--out", str(tmp_path / "x.csv")])
        assert result.exit_code == 2 and "sha256" in result.output and "other.onnx" in result.output
        assert not (tmp_path / "x.csv").exists()

    def test_bench_remote_reports_latency_and_throughput(self, url, secrets, model):
        from edgeleuk.bench.options import BenchOptions
        from edgeleuk.bench.runner import run_bench

        fields = {"server": url, "server_token_file": str(secrets[2]), "server_ca": str(secrets[0])}
        opts = BenchOptions(backend="remote", n=8, batch=4, quick=True, engine_fields=fields)
        report = run_bench(model, options=opts)
        (row,) = [r for r in report.rows if r.case.backend == "remote"]
        assert row.status == "ok", row.reason
        lat = row.measurement.latency
        assert lat["p50_ms"] > 0 and lat["p99_ms"] >= lat["p50_ms"]
        assert row.best_throughput[0] > 0  # cells/s
        assert url in report.to_markdown()

    def test_without_the_token_every_route_is_401_alike(self, url, secrets):
        anonymous = ServerClient(url, retries=0, ca_file=str(secrets[0]))
        wrong = ServerClient(url, retries=0, token="not-the-token-0123456789", ca_file=str(secrets[0]))
        answers = [c.request(r) for c in (anonymous, wrong) for r in (wire.HEALTH, wire.METADATA, "/nowhere")]
        answers.append(anonymous.predict_tensor(gray_cell(90)[None]))
        assert {a.status for a in answers} == {401}
        assert len({json.dumps(a.payload) for a in answers}) == 1 and "sha256" not in answers[0].payload

    def test_plain_http_and_unknown_certificates_get_nothing(self, url):
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            ServerClient(url, retries=0, token=TOKEN).request(wire.HEALTH)

    def test_a_chunked_body_is_411(self, url, secrets):
        host, port = url.removeprefix("https://").split(":")
        conn = http.client.HTTPSConnection(host, int(port), timeout=60,
                                           context=ssl.create_default_context(cafile=str(secrets[0])))
        try:
            conn.request("POST", wire.PREDICT, body=iter([b"x" * 1024] * 4), encode_chunked=True,
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": wire.NPY_TYPE})
            assert conn.getresponse().status == 411
        finally:
            conn.close()

    def test_hostile_mix_answers_every_authenticated_request(self, url, secrets, model):
        from load_support import run_load

        cells = [gray_cell(level, seed=i) for i, level in enumerate(LEVELS)]
        want = [(p.prob_all, p.label) for p in Classifier.load(model, "cpu").predict_arrays(np.stack(cells))]
        # 70 slow-body senders (more than the old limit of 64 requests per replica) and 2 anonymous callers.
        result = run_load(url, TOKEN, secrets[0], cells, want, clients=4, requests=25, slow=70, unauth=2)
        assert result.answered == 100 and not result.wrong, result.to_dict()
        assert set(result.unauth_statuses) == {401}, result.to_dict()
        assert set(result.slow_statuses) <= {408, 0}, result.to_dict()
        assert 0 < result.peak_rss_mb["replica"] < 1024, result.to_dict()  # the bound docs/serving.md states

