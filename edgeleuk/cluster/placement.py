"""Fit workers, tasks and replicas to the nodes of a Ray cluster, before anything is submitted.

Ray places each worker on one node, so a worker can never use more CPUs or GPUs than one node
has: the cluster's total is no guide (two 1-CPU nodes make 2 CPUs, and a 2-CPU worker fits on
neither; Ray would wait for such a node for ever). Everything here but :func:`fit_serve` is
pure: it reads the node list that :func:`nodes_from_ray` makes of ``ray.nodes()`` and is tested
on made-up lists.

A request no node can place is a :class:`~edgeleuk.core.errors.UsageError` (exit 2) naming
what was asked for, the largest node and the flag that fixes it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.registry import device_of

log = logging.getLogger(__name__)
Options = TypeVar("Options")

#: Default engine threads per worker: engines scale poorly beyond 4 threads on one cell.
MAX_DEFAULT_THREADS = 4
_EPS = 1e-9  # fractional GPUs (0.5 + 0.5) must add up to whole ones


@dataclass(frozen=True)
class Node:
    """One alive Ray node as placement sees it.

    Attributes:
        name: How the log and the errors name it (address and the start of its node id).
        cpus: CPUs Ray schedules on it.
        gpus: GPUs Ray schedules on it.
    """

    name: str
    cpus: float
    gpus: float = 0.0

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU(s)" if self.gpus else ""
        return f"{self.name} ({self.cpus:g} CPU(s){gpus})"


@dataclass(frozen=True)
class Ask:
    """What one job asks of the cluster; None lets :func:`place` choose from the nodes.

    Attributes:
        what: The unit, for messages: ``worker``, ``replica``, ``task``.
        threads: CPUs per unit; None: the smallest eligible node's CPUs, at most ``cap``.
        count: Units; None: as many as fit.
        gpus: GPUs per unit (a fraction shares one GPU); 0 for CPU work.
        threads_flag: The option that sets ``threads`` (named in errors).
        count_flag: The option that sets ``count``.
        gpu_fix: What to do when no node has the GPUs (named in errors).
        cap: Most CPUs a unit gets by default (None: a whole node).
    """

    what: str
    threads: int | None = None
    count: int | None = None
    gpus: float = 0.0
    threads_flag: str = "--threads"
    count_flag: str = "--cluster-workers"
    gpu_fix: str = "choose a CPU backend"
    cap: int | None = MAX_DEFAULT_THREADS


@dataclass(frozen=True)
class Placement:
    """How many units of how many CPUs/GPUs, and how many fit on each node.

    Attributes:
        count: Units to start.
        threads: CPUs per unit (Ray reserves them; engines use them as threads).
        gpus: GPUs per unit.
        fits: Per eligible node, how many units it holds at most.
    """

    count: int
    threads: int
    gpus: float
    fits: tuple[tuple[Node, int], ...]

    def describe(self, what: str) -> str:
        """The plan log line: ``2 worker(s) x 1 CPU(s) on 2 node(s): A (1 CPU(s)) fits 1, ...``."""
        gpus = f" + {self.gpus:g} GPU(s)" if self.gpus else ""
        nodes = ", ".join(f"{node.describe()} fits {n}" for node, n in self.fits)
        return f"{self.count} {what}(s) x {self.threads} CPU(s){gpus} on {len(self.fits)} node(s): {nodes}"


def nodes_from_ray(raw: Iterable[Mapping[str, Any]]) -> tuple[Node, ...]:
    """The alive nodes of ``ray.nodes()``, with the CPUs and GPUs each declares."""
    nodes = []
    for entry in raw:
        if not entry.get("Alive", False):
            continue
        resources = entry.get("Resources") or {}
        name = f"{entry.get('NodeManagerAddress', '?')} [{str(entry.get('NodeID', ''))[:8]}]"
        nodes.append(Node(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0))))
    return tuple(nodes)


def _fits(node: Node, threads: int, gpus: float) -> int:
    """How many units of ``threads`` CPUs and ``gpus`` GPUs the node holds."""
    n = math.floor(node.cpus / threads + _EPS)
    if gpus > 0:
        n = min(n, math.floor(node.gpus / gpus + _EPS))
    return max(0, n)


def _largest(nodes: Sequence[Node]) -> str:
    return ", ".join(n.describe() for n in sorted(nodes, key=lambda n: (-n.cpus, -n.gpus))[:1])


def _threads(nodes: Sequence[Node], ask: Ask) -> int:
    """CPUs per unit: as asked, or the smallest eligible node's (at most ``cap``); checked to fit."""
    eligible = [n for n in nodes if n.cpus >= 1 and (ask.gpus <= 0 or n.gpus + _EPS >= ask.gpus)]
    if ask.gpus > 0 and not eligible:
        raise UsageError(f"each {ask.what} asks for {ask.gpus:g} GPU(s) but no node of the Ray cluster has "
                         f"that many (largest: {_largest(nodes)}); {ask.gpu_fix}")
    if not eligible:
        raise UsageError(f"no node of the Ray cluster has a CPU to run a {ask.what} on "
                         f"(nodes: {', '.join(n.describe() for n in nodes)}); add a node with CPUs")
    if ask.threads is not None:
        biggest = max(int(n.cpus) for n in eligible)
        if ask.threads > biggest:
            raise UsageError(f"each {ask.what} asks for {ask.threads} CPU(s) ({ask.threads_flag} {ask.threads}) "
                             f"but the largest node has {biggest} CPU(s) ({_largest(eligible)}); "
                             f"give {ask.threads_flag} {biggest} or less")
        return ask.threads
    smallest = max(1, int(min(n.cpus for n in eligible)))
    return smallest if ask.cap is None else min(ask.cap, smallest)


def place(nodes: Sequence[Node], ask: Ask) -> Placement:
    """Size ``ask`` from the nodes (each value it gives wins) and check that it fits.

    Args:
        nodes: The alive nodes (:func:`nodes_from_ray`).
        ask: What the job asks for.

    Raises:
        UsageError: No alive node, no node with the GPUs, a unit larger than the largest
            node, or more units than the nodes hold (exit 2, with the flag that fixes it).
    """
    if not nodes:
        raise UsageError("the Ray cluster has no alive node; start one (`ray start`) and try again")
    threads = _threads(nodes, ask)
    fits = tuple((n, _fits(n, threads, ask.gpus)) for n in nodes)
    fits = tuple((n, k) for n, k in fits if k > 0)
    room = sum(k for _, k in fits)
    count = ask.count if ask.count is not None else room
    if count > room:
        gpus = f" and {ask.gpus:g} GPU(s)" if ask.gpus else ""
        raise UsageError(f"{ask.count_flag} {count} asks for {count} {ask.what}(s) of {threads} CPU(s){gpus} "
                         f"but the nodes hold {room} ({', '.join(f'{n.describe()}: {k}' for n, k in fits)}); "
                         f"give {ask.count_flag} {room} or less, or fewer CPUs per {ask.what} ({ask.threads_flag})")
    return Placement(count=count, threads=threads, gpus=ask.gpus, fits=fits)


def serve_shape(nodes: Sequence[Node], gpu_backend: bool, replicas: int | None, threads: int | None,
                gpus: float) -> dict[str, Any]:
    """``serve``'s replicas, threads and GPUs per replica from the nodes (each given value wins).

    A backend that computes on a GPU gets one GPU per replica unless ``gpus`` says otherwise
    (a fraction shares one), and one CPU unless ``threads`` does.

    Raises:
        UsageError: Replicas no node can hold (exit 2), with the flag that fixes it.
    """
    gpus = gpus or (1.0 if gpu_backend else 0.0)
    ask = Ask("replica", threads=threads or (1 if gpus else None), count=replicas, gpus=gpus,
              count_flag="--replicas",
              gpu_fix="add a GPU node, give --gpus a share of one, or choose a CPU backend")
    placed = place(nodes, ask)
    return {"replicas": placed.count, "threads": placed.threads, "gpus": placed.gpus,
            "plan": placed.describe("replica")}


def fit_serve(ray: Any, options: Options) -> Options:
    """``serve``'s options with replicas, threads and GPUs sized from the alive nodes of ``ray``.

    Args:
        ray: The connected ``ray`` module.
        options: A :class:`edgeleuk.serving.server.ServeOptions` (``backend``, ``replicas``,
            ``threads``, ``gpus``); None in ``replicas`` or ``threads`` is sized here.

    Raises:
        UsageError: Replicas no node can hold (exit 2), before anything is deployed.
    """
    o: Any = options
    shape = serve_shape(nodes_from_ray(ray.nodes()), device_of(o.backend) == "gpu", o.replicas, o.threads, o.gpus)
    log.info("serve: %s", shape.pop("plan"))
    return dataclasses.replace(o, **shape)
