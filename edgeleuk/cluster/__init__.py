"""Jobs spread over a Ray cluster: ``predict --cluster`` (Ray actors) and ``sweep --cluster`` (Ray tasks).

Ray runs on one machine with no change of code and scales to a cluster by address. Both jobs
write the same files as their local versions; on a real cluster the model, the images and the
output folder must be on storage every node sees under the same path (NFS, a shared volume).
Workers are sized from the nodes (:mod:`edgeleuk.cluster.placement`), and a job that makes no
progress for :attr:`ClusterOptions.stall_s` seconds stops (exit 1) rather than waiting for ever.

Needs the ``ray`` extra. Importing this package imports no Ray.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from edgeleuk.core.errors import BackendUnavailable, UsageError

log = logging.getLogger(__name__)

RAY_FIX = "pip install 'edgeleuk[ray]' (Ray and Ray Serve)"

#: Seconds a cluster job may go without progress before it stops (exit 1); ``--cluster-timeout``.
DEFAULT_STALL_S = 300.0

# Ray 2.60's token authentication: a cluster started with it refuses a driver that joins by
# address without these (Ray enables it by itself only for a cluster it finds on this machine).
AUTH_HINT = ("if the cluster uses token authentication, export RAY_AUTH_MODE=token and give this machine "
             "the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; "
             "`ray get-auth-token` on the head prints it)")


@dataclass(frozen=True)
class ClusterOptions:
    """How a cluster job (``predict --cluster``, ``sweep --cluster``) guards against hangs.

    Attributes:
        stall_s: Seconds without progress (no result, no worker started, no heartbeat) after
            which the job stops with exit 1 and keeps what it has.
    """

    stall_s: float = DEFAULT_STALL_S

    def __post_init__(self) -> None:
        if not self.stall_s > 0:
            raise UsageError(f"--cluster-timeout must be more than 0 seconds, got {self.stall_s}")


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
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        hint = "" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else f"; {AUTH_HINT}"
        raise BackendUnavailable(f"cannot reach the Ray cluster at {address}: {exc}{hint}") from exc
    log.info("ray: %s CPUs, %s GPUs in the cluster", ray.cluster_resources().get("CPU", 0),
             ray.cluster_resources().get("GPU", 0))
    return ray


def alive_nodes(ray: Any) -> tuple[Any, ...]:
    """The cluster's alive nodes as :class:`edgeleuk.cluster.placement.Node` s."""
    from edgeleuk.cluster.placement import nodes_from_ray

    return nodes_from_ray(ray.nodes())
