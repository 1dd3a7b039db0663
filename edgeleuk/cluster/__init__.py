"""Jobs spread over a Ray cluster: ``predict --cluster`` (Ray Data) and ``sweep --cluster`` (Ray tasks).

Ray runs on one machine with no change of code and scales to a cluster by address. Both jobs
write the same files as their local versions; on a real cluster the model, the images and the
output folder must be on storage every node sees under the same path (NFS, a shared volume).

Needs the ``ray`` extra. Importing this package imports no Ray.
"""

from __future__ import annotations

import logging
from typing import Any

from edgeleuk.core.errors import BackendUnavailable

log = logging.getLogger(__name__)

RAY_FIX = "pip install 'edgeleuk[ray]' (Ray Serve and Ray Data)"


def import_ray() -> Any:
    """Ray, or a usage error naming the extra to install (exit 2)."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(f"Ray is not installed ({exc}); {RAY_FIX}") from exc
    return ray


def connect(address: str | None = "auto") -> Any:
    """Join the Ray cluster at ``address`` (once per process) and return the ``ray`` module.

    Args:
        address: ``auto`` (or None): the running cluster Ray finds (``RAY_ADDRESS``, or the
            latest ``ray start`` on this machine), else a new local Ray on this machine;
            ``local``: always a new local Ray; anything else: that cluster
            (``HOST:PORT`` or ``ray://HOST:10001``).

    Raises:
        BackendUnavailable: Ray is not installed, or the cluster cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():  # already connected (a test, or serve and predict in one process)
        return ray
    target = None if address in (None, "auto") else address
    try:
        ray.init(address=target, include_dashboard=False)
    except ConnectionError as exc:
        raise BackendUnavailable(f"cannot reach the Ray cluster at {address}: {exc}") from exc
    log.info("ray: %s CPUs, %s GPUs in the cluster", ray.cluster_resources().get("CPU", 0),
             ray.cluster_resources().get("GPU", 0))
    return ray
