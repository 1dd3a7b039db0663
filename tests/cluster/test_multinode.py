"""A real multi-node Ray cluster on loopback: nodes smaller than the total, token authentication on.

One cluster for the module (``ray.cluster_utils.Cluster``: a head and a worker node of 1 CPU each,
in a private temporary folder, RAY_AUTH_MODE=token with a token of its own); the tests that lose a
node add a third 1-CPU node and kill it. Everything started here is shut down at the end of the
module. SYNTHETIC cells only.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.cluster.pool import IN_FLIGHT
from edgeleuk.core.errors import UsageError

pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow

LEVELS = (20, 60, 100, 126, 127, 128, 129, 160, 200, 240, 90, 170)
runner = CliRunner()
# Dead nodes noticed within seconds, not Ray's default half minute.
FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
               "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Head + worker node, 1 CPU each; this process connected to it by address, with the token."""
    import ray
    from ray._private.authentication_test_utils import reset_auth_token_state  # Ray's own test helper
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="elk-ray-")  # short: Ray's socket paths live under it
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", temp)  # its own address file: `--cluster auto` elsewhere never finds it
        mp.setenv("RAY_AUTH_MODE", "token")  # as `ray start` sets it where a token exists
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))  # the token every node and the driver get
        mp.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        mp.delenv("RAY_ADDRESS", raising=False)
        reset_auth_token_state()  # this process read its Ray config before: read it again, in token mode
        nodes = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "_system_config": FAST_HEALTH})
        try:
            nodes.add_node(num_cpus=1)
            nodes.wait_for_nodes()
            ray.init(address=nodes.address, log_to_driver=False)
            yield nodes
        finally:
            ray.shutdown()
            nodes.shutdown()
    reset_auth_token_state()  # later modules start their own Ray with their own token
    shutil.rmtree(temp, ignore_errors=True)




@pytest.fixture(scope="module")
def local_csv(model, folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mn-local") / "local.csv"
    result = runner.invoke(app, ["predict", str(folder), "-m", str(model), "--backend", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _calls(path: Path) -> list[list[str]]:
    """A predictions CSV (header included) without the cells that say when and where each call ran.

    Every other cell (the call, model id, threshold, TTA mode) must equal local predict's byte for byte;
    ``engine`` must say the cluster ran it (``cpu@ray-fp32``, local: ``cpu-fp32``).
    """
    with open(path, newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    drop = {header.index("time_utc"), header.index("engine")}
    engines = {row[header.index("engine")] for row in rows if row[header.index("status")] != "error"}
    assert engines <= {"cpu@ray-fp32", "cpu-fp32"} and len(engines) == 1, engines
    return [[c for i, c in enumerate(r) if i not in drop] for r in (header, *rows)]


def _predict(folder: Path, model: Path, out: Path, cluster: Any, *extra: str) -> Any:
    return runner.invoke(app, ["predict", str(folder), "-m", str(model), "--backend", "cpu", "--out", str(out),
                               "--cluster", cluster.address, *extra])


def test_default_cluster_predict_fits_1_cpu_nodes_and_matches_local(cluster, model, folder, local_csv, tmp_path):
    """The default plan is 2 workers x 1 CPU (one per node), and the CSV is local predict's, byte for byte."""
    result = _predict(folder, model, tmp_path / "c.csv", cluster)
    assert result.exit_code == 0, result.output
    assert "2 worker(s) x 1 CPU(s)" in result.output
    assert _calls(tmp_path / "c.csv") == _calls(local_csv)



def test_auto_rows_name_the_engine_each_worker_chose(cluster, model, folder, tmp_path):
    """``--backend auto`` is resolved on each node: the rows say what ran there, never ``auto``."""
    from edgeleuk.runtime.classifier import Classifier
    from edgeleuk.workflow.provenance import engine_name

    local = engine_name(Classifier.load(model, "auto").info)  # the nodes are this machine
    result = runner.invoke(app, ["predict", str(folder), "-m", str(model), "--backend", "auto", "--out",
                                 str(tmp_path / "c.csv"), "--cluster", cluster.address])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "c.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    backend, precision = local.split("-", 1)
    assert {r["engine"] for r in rows} == {f"{backend}@ray-{precision}"}, local

def test_a_request_no_node_can_place_exits_2_naming_the_largest_node(cluster, model, folder, tmp_path):
    """A real CLI process that joins by address with the token; nothing is submitted."""
    cmd = [sys.executable, "-m", "edgeleuk", "predict", str(folder), "-m", str(model), "--backend", "cpu",
           "--out", str(tmp_path / "x.csv"), "--cluster", cluster.address, "--threads", "64"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "asks for 64 CPU(s) (--threads 64) but the largest node has 1 CPU(s)" in done.stderr
    assert "give --threads 1 or less" in done.stderr
    many = _predict(folder, model, tmp_path / "x.csv", cluster, "--cluster-workers", "3")
    assert many.exit_code == 2 and "--cluster-workers 3 asks for 3 worker(s) of 1 CPU(s)" in many.output
    assert not (tmp_path / "x.csv").exists()


@pytest.fixture
def holds(cluster) -> Iterator[list[Any]]:
    """Actors that hold the one CPU of each node of the module's cluster, so that no worker starts there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    class Hold:  # defined here so that Ray ships it by value: the nodes cannot import this test module
        def ready(self) -> bool:
            return True

    cluster.wait_for_nodes()  # a node an earlier test killed is gone from the list first
    hold = ray.remote(num_cpus=1)(Hold)
    held = [hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote()
            for n in cluster.list_all_nodes()]
    ray.get([h.ready.remote() for h in held], timeout=60)
    yield held
    for h in held:
        ray.kill(h)


@pytest.fixture
def third_node(cluster, holds) -> Iterator[Any]:
    """A third 1-CPU node, the only one with a CPU free (workers go to it)."""
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield node
    if node in cluster.worker_nodes:
        cluster.remove_node(node, allow_graceful=False)
    cluster.wait_for_nodes()


def _kill_after_first(monkeypatch, then) -> None:
    """Run ``then`` (kill a node...) once the driver has the first chunk's result."""
    import edgeleuk.cluster.predict as cluster_predict

    real = cluster_predict.run_chunks

    def wrapped(*args, **kwargs):
        results = real(*args, **kwargs)
        yield next(results)
        then()
        yield from results

    monkeypatch.setattr(cluster_predict, "run_chunks", wrapped)


def _remove_and_wait(cluster: Any, node: Any) -> None:
    """Kill ``node`` and return once Ray marks it dead: until then its worker may still finish chunks."""
    import time

    import ray

    cluster.remove_node(node, allow_graceful=False)
    for _ in range(600):  # at most 60 s
        if not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
            return
        time.sleep(0.1)
    raise AssertionError(f"node {node.node_id} still alive 60 s after it was removed")


def test_a_lost_node_is_survived_by_the_other_workers(cluster, holds, third_node, model, folder, local_csv,
                                                      tmp_path, monkeypatch, caplog):
    import ray

    node = third_node

    def lose_the_node() -> None:  # free a CPU for the second worker, then kill the first one's node
        ray.kill(holds[0])
        # Resume only once Ray marks the node dead, and with one file per chunk: otherwise the dying
        # node's worker could finish every chunk before its death is seen, and nothing is lost.
        _remove_and_wait(cluster, node)

    _kill_after_first(monkeypatch, lose_the_node)
    result = _predict(folder, model, tmp_path / "c.csv", cluster, "--cluster-workers", "2", "--batch", "1")
    assert result.exit_code == 0, result.output
    assert "lost:" in caplog.text and "its chunks go to them" in caplog.text  # the first worker's node died
    assert _calls(tmp_path / "c.csv") == _calls(local_csv)


def test_a_lost_node_with_no_worker_left_stops_with_a_partial_csv(cluster, third_node, model, folder,
                                                                  tmp_path, monkeypatch):
    # One file per chunk: when the node dies, at most the chunks already queued on the worker
    # (cluster.pool.IN_FLIGHT) can have finished, so the job cannot complete before the kill lands.
    local = tmp_path / "local.csv"
    done = runner.invoke(app, ["predict", str(folder), "-m", str(model), "--backend", "cpu", "--batch", "1",
                               "--out", str(local)])
    assert done.exit_code == 0, done.output
    _kill_after_first(monkeypatch, lambda: _remove_and_wait(cluster, third_node))
    result = _predict(folder, model, tmp_path / "c.csv", cluster, "--cluster-workers", "1", "--batch", "1")
    assert result.exit_code == 1, result.output
    assert "every cluster worker was lost" in result.output and "c.partial.csv" in result.output
    partial = _calls(tmp_path / "c.partial.csv")
    assert 2 <= len(partial) <= 2 + IN_FLIGHT < len(_calls(local))
    assert partial == _calls(local)[: len(partial)]  # the rows made, as local predict's
    assert not (tmp_path / "c.csv").exists()


def test_a_job_that_cannot_start_stops_after_the_timeout(cluster, holds, model, folder, tmp_path):
    """Every CPU is held: the worker never starts, and the job says so after --cluster-timeout."""
    result = _predict(folder, model, tmp_path / "c.csv", cluster, "--cluster-workers", "1",
                      "--cluster-timeout", "3")
    assert result.exit_code == 1, result.output
    assert "no progress for 3 s: 0 of 1 cluster worker(s) started" in result.output
    assert "--cluster-timeout" in result.output and not (tmp_path / "c.csv").exists()


def test_a_sweep_whose_seeds_cannot_start_stops_after_the_timeout(cluster, holds, synth_root, tmp_path):
    from edgeleuk.cluster import ClusterOptions
    from edgeleuk.cluster.sweep import SweepFailed, cluster_sweep

    with pytest.raises(SweepFailed) as err:
        cluster_sweep(synth_root, recipe="smoke", seeds=2, out=tmp_path / "s", address=cluster.address,
                      cluster=ClusterOptions(stall_s=3))
    text = str(err.value)
    assert "seed 0: no progress for 3 s (it never started" in text and "seed 1: no progress" in text
    assert "--cluster-timeout" in text and not (tmp_path / "s" / "table2.md").exists()


def test_serve_puts_a_replica_on_each_node_and_answers_like_local(cluster, model, folder):
    import ray

    from edgeleuk.runtime.classifier import Classifier
    from edgeleuk.runtime.remote import ServerClient
    from edgeleuk.serving.server import ServeOptions, start, stop

    port = _free_port()
    url = start(model, ServeOptions(backend="cpu", replicas=None, threads=None, port=port, address=cluster.address))
    try:
        # 2 replicas x 1 CPU on two 1-CPU nodes. Ray's view of free resources lags (and earlier tests'
        # actors are killed without waiting), so wait for it to settle before reading it.
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 0
        files = sorted(p for p in folder.iterdir() if p.is_file())
        local = Classifier.load(model, "cpu").predict_paths(files)
        client = ServerClient(url, timeout=60)
        for path, want in zip(files, local, strict=True):
            answer = client.predict_file(path.read_bytes())
            if not want.ok:
                assert 400 <= answer.status < 500 and want.error in answer.payload["error"], path.name
                continue
            (got,) = answer.payload["predictions"]
            assert abs(got["prob_all"] - want.prob_all) <= 1e-6 and got["label"] == want.label, path.name
    finally:
        stop()
    with pytest.raises(UsageError, match="--replicas 3 asks for 3 replica"):
        start(model, ServeOptions(backend="cpu", replicas=3, threads=None, port=port, address=cluster.address))


def test_cluster_sweep_on_two_nodes_matches_the_local_table(cluster, synth_root, tmp_path, monkeypatch):
    from edgeleuk.cluster import sweep as cluster_sweep_module
    from edgeleuk.cluster.sweep import cluster_sweep
    from edgeleuk.training import sweep as local_sweep_module
    from edgeleuk.training.sweep import run_sweep

    local = run_sweep(synth_root, recipe="smoke", seeds=2, out=tmp_path / "local")
    remote = cluster_sweep(synth_root, recipe="smoke", seeds=2, out=tmp_path / "cluster", address=cluster.address)
    assert remote.rows == local.rows and [r.seed for r in remote.runs] == [0, 1]

    def untimed(runs):
        return [{k: v for k, v in r.best_metrics.items() if "seconds" not in k} for r in runs]

    assert untimed(remote.runs) == untimed(local.runs)  # same losses and metrics, to the last bit
    table = (tmp_path / "cluster" / "table2.md").read_text().splitlines()
    assert table[:-1] == (tmp_path / "local" / "table2.md").read_text().splitlines()[:-1]  # last: the path

    def boom(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    for module in (cluster_sweep_module, local_sweep_module):  # resumable: finished seeds are not rerun
        monkeypatch.setattr(module, "train", boom)
    again = cluster_sweep(synth_root, recipe="smoke", seeds=2, out=tmp_path / "cluster", address=cluster.address)
    assert again.rows == remote.rows


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
