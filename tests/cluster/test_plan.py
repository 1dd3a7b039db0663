"""Sizing workers, tasks and replicas from the nodes, not the cluster's total (made-up node lists, no Ray)."""

from __future__ import annotations

import pytest

from edgeleuk.cluster import ClusterOptions
from edgeleuk.cluster.placement import Ask, Node, nodes_from_ray, place, serve_shape
from edgeleuk.cluster.predict import ClusterShape, plan
from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.registry import BACKENDS, device_of

TWO_SMALL = (Node("a", 1), Node("b", 1))  # the loopback cluster: 2 CPUs in all, 1 on each node


def test_every_gpu_backend_gets_one_gpu_per_worker() -> None:
    gpu_backends = [name for name, cls in BACKENDS.items() if cls.device == "gpu"]
    assert "cuda" in gpu_backends
    for name in gpu_backends:
        assert plan([Node("g", 16, 3)], name, None, None) == ClusterShape(workers=3, threads=1, gpus=1)
        assert plan([Node("g", 16, 2), Node("c", 64)], name, None, None).workers == 2  # GPU nodes only
        with pytest.raises(UsageError, match="needs a GPU on a node.*--backend cpu"):
            plan([Node("c", 16)], name, None, None)
        with pytest.raises(UsageError, match="needs a GPU"):  # a worker count does not skip the check
            plan([Node("c", 16)], name, 2, None)


@pytest.mark.parametrize("backend", ["auto", "cpu", "openvino"])
def test_cpu_backends_share_the_cpus_and_take_no_gpu(backend: str) -> None:
    assert device_of(backend) == "cpu"
    assert plan([Node("n", 16, 3)], backend, None, None) == ClusterShape(workers=4, threads=4, gpus=0)
    assert plan([Node("n", 16, 3)], backend, 2, 3) == ClusterShape(workers=2, threads=3, gpus=0)


def test_default_workers_fit_nodes_smaller_than_the_total() -> None:
    """Two 1-CPU nodes: 2 workers of 1 CPU, never 1 worker of 2 CPUs (which no node holds)."""
    shape = plan(TWO_SMALL, "cpu", None, None)
    assert shape == ClusterShape(workers=2, threads=1)
    assert shape.nodes == "2 worker(s) x 1 CPU(s) on 2 node(s): a (1 CPU(s)) fits 1, b (1 CPU(s)) fits 1"
    assert plan([Node("big", 8), Node("small", 2)], "cpu", None, None) == ClusterShape(workers=5, threads=2)
    assert plan([Node("head", 0), Node("w", 3)], "cpu", None, None) == ClusterShape(workers=1, threads=3)


def test_a_worker_larger_than_every_node_names_the_largest_node_and_the_flag() -> None:
    with pytest.raises(UsageError) as err:
        plan([Node("a", 1), Node("b", 2)], "cpu", None, 64)
    text = str(err.value)
    assert "asks for 64 CPU(s) (--threads 64)" in text and "largest node has 2 CPU(s) (b (2 CPU(s)))" in text
    assert "give --threads 2 or less" in text and err.value.exit_code == 2


def test_more_workers_than_the_nodes_hold_is_refused_with_the_fix() -> None:
    with pytest.raises(UsageError, match=r"--cluster-workers 3 asks for 3 worker\(s\) of 1 CPU\(s\) but the nodes "
                                         r"hold 2 .*give --cluster-workers 2 or less"):
        plan(TWO_SMALL, "cpu", 3, None)
    with pytest.raises(UsageError, match="no alive node"):
        plan([], "cpu", None, None)


def test_an_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown backend"):
        plan([Node("n", 4)], "tpu", None, None)


def test_nodes_from_ray_keeps_the_alive_ones_with_their_cpus_and_gpus() -> None:
    raw = [
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "NodeID": "abcdef0123", "Resources": {"CPU": 8.0}},
        {"Alive": False, "NodeManagerAddress": "10.0.0.2", "NodeID": "dead", "Resources": {"CPU": 64.0}},
        {"Alive": True, "NodeManagerAddress": "10.0.0.3", "NodeID": "9876543210", "Resources": {"CPU": 4, "GPU": 2}},
    ]
    assert nodes_from_ray(raw) == (Node("10.0.0.1 [abcdef01]", 8, 0), Node("10.0.0.3 [98765432]", 4, 2))


def test_serve_replicas_fit_the_nodes() -> None:
    shape = serve_shape(TWO_SMALL, False, None, None, 0.0)
    assert (shape["replicas"], shape["threads"], shape["gpus"]) == (2, 1, 0.0)
    two_per_gpu = serve_shape([Node("g", 8, 1)], True, None, None, 0.5)  # --gpus 0.5: two share one GPU
    assert (two_per_gpu["replicas"], two_per_gpu["threads"], two_per_gpu["gpus"]) == (2, 1, 0.5)
    assert serve_shape([Node("g", 8, 2)], True, None, None, 0.0)["gpus"] == 1.0  # a GPU backend gets a GPU
    with pytest.raises(UsageError, match="--replicas 3 asks for 3 replica"):
        serve_shape(TWO_SMALL, False, 3, None, 0.0)
    with pytest.raises(UsageError, match="give --threads 1 or less"):
        serve_shape(TWO_SMALL, False, None, 2, 0.0)


def test_tasks_may_take_a_whole_node() -> None:
    assert place([Node("n", 16)], Ask("task", cap=None)).threads == 16
    assert place([Node("n", 16)], Ask("task")).threads == 4


def test_the_no_progress_bound_must_be_positive() -> None:
    assert ClusterOptions().stall_s == 300
    with pytest.raises(UsageError, match="--cluster-timeout must be more than 0"):
        ClusterOptions(stall_s=0)


def test_a_record_decodes_back_to_an_equal_prediction_with_tuples() -> None:
    from edgeleuk.cluster.predict import _decode, _encode
    from edgeleuk.runtime.classifier import Prediction

    pred = Prediction(path="c.bmp", status="ok", prob_all=0.9, label="all", adjustments=("padded:1x1",),
                      qc=("blur", "ood"), ood_score=3.5, ood_flag=True)
    record = {k: list(v) if isinstance(v, tuple) else v for k, v in _encode(pred).items()}  # as a JSON-like wire
    back = _decode(record)
    assert back == pred and back.qc == ("blur", "ood") and isinstance(back.adjustments, tuple)
