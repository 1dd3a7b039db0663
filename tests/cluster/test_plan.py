"""Sizing the --cluster worker pool: GPU backends get GPUs because they declare a gpu device (no Ray started)."""

from __future__ import annotations

import pytest

from edgeleuk.cluster.predict import ClusterShape, plan
from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.registry import BACKENDS, device_of


def test_every_gpu_backend_gets_one_gpu_per_worker() -> None:
    gpu_backends = [name for name, cls in BACKENDS.items() if cls.device == "gpu"]
    assert "cuda" in gpu_backends
    for name in gpu_backends:
        assert plan({"CPU": 16, "GPU": 3}, name, None, None) == ClusterShape(workers=3, threads=1, gpus=1)
        with pytest.raises(UsageError, match="no free GPU"):
            plan({"CPU": 16}, name, None, None)


@pytest.mark.parametrize("backend", ["auto", "cpu", "openvino"])
def test_cpu_backends_share_the_cpus_and_take_no_gpu(backend: str) -> None:
    assert device_of(backend) == "cpu"
    assert plan({"CPU": 16, "GPU": 3}, backend, None, None) == ClusterShape(workers=4, threads=4, gpus=0)
    assert plan({"CPU": 16, "GPU": 3}, backend, 2, 3) == ClusterShape(workers=2, threads=3, gpus=0)


def test_an_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown backend"):
        plan({"CPU": 4}, "tpu", None, None)
