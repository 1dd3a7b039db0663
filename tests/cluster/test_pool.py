"""The actor pool's rules on a stand-in Ray: lost actors, actors that never start, faults, the no-progress bound.

No cluster is started; a fake clock moves on when nothing is ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from edgeleuk.cluster import pool
from edgeleuk.core.errors import EngineFault

exceptions = pytest.importorskip("ray.exceptions", reason="the ray extra is not installed")


@dataclass(eq=False)  # hashed and compared by identity, as Ray's object refs
class Ref:
    value: Any = None
    error: BaseException | None = None
    done: bool = True


@dataclass(eq=False)
class Actor:
    """``starts``: its ``ready`` call ever finishes; ``dies_after``: runs it finishes before it is lost."""

    name: str
    starts: bool = True
    dies_after: int | None = None
    fault: bool = False
    ran: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ready = _Method(lambda: Ref(self.name, done=self.starts))
        self.run = _Method(self._run)

    def _run(self, chunk: Any) -> Ref:
        if self.fault:
            return Ref(error=exceptions.RayTaskError("run", "Traceback ...", RuntimeError("engine broke")))
        if self.dies_after is not None and len(self.ran) >= self.dies_after:
            return Ref(error=exceptions.ActorDiedError())
        self.ran.append(chunk)
        return Ref(chunk * 10)


class _Method:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class FakeRay:
    """``wait`` returns the first finished call, or nothing and the clock moves on by ``timeout``."""

    exceptions = exceptions

    def __init__(self) -> None:
        self.now = 0.0
        self.killed: list[Actor] = []

    def wait(self, refs: list[Ref], num_returns: int, timeout: float) -> tuple[list[Ref], list[Ref]]:
        ready = [r for r in refs if r.done][:num_returns]
        if not ready:
            self.now += timeout
        return ready, [r for r in refs if r not in ready]

    def get(self, ref: Ref) -> Any:
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor: Actor) -> None:
        self.killed.append(actor)


def _run(actors: list[Actor], chunks: list[int], stall_s: float = 5.0, monkeypatch=None) -> tuple[FakeRay, dict]:
    ray = FakeRay()
    monkeypatch.setattr(pool.time, "monotonic", lambda: ray.now)
    todo = iter(actors)
    results = dict(pool.run_chunks(ray, lambda: next(todo), len(actors), chunks, stall_s))
    return ray, results


def test_every_chunk_once_and_every_actor_killed_at_the_end(monkeypatch) -> None:
    actors = [Actor("a"), Actor("b")]
    ray, results = _run(actors, list(range(7)), monkeypatch=monkeypatch)
    assert results == {i: i * 10 for i in range(7)}
    assert sorted(actors[0].ran + actors[1].ran) == list(range(7))
    assert ray.killed == actors


def test_an_actor_that_never_starts_gets_no_work(monkeypatch) -> None:
    stuck, good = Actor("stuck", starts=False), Actor("good")
    ray, results = _run([stuck, good], list(range(5)), monkeypatch=monkeypatch)
    assert results == {i: i * 10 for i in range(5)} and good.ran == list(range(5)) and stuck.ran == []
    assert stuck in ray.killed  # not left waiting for a node


def test_a_lost_actor_hands_its_chunks_to_the_others(monkeypatch, caplog) -> None:
    lost, other = Actor("lost", dies_after=1), Actor("other")
    _, results = _run([lost, other], list(range(6)), monkeypatch=monkeypatch)
    assert results == {i: i * 10 for i in range(6)}
    assert "worker 0 lost" in caplog.text and "1 worker(s) left" in caplog.text


def test_no_progress_for_the_bound_is_an_engine_fault(monkeypatch) -> None:
    with pytest.raises(EngineFault, match=r"no progress for 5 s: 0 of 2 cluster worker\(s\) started, "
                                          r"0 of 3 chunk\(s\) done.*--cluster-timeout"):
        _run([Actor("a", starts=False), Actor("b", starts=False)], [1, 2, 3], monkeypatch=monkeypatch)


def test_a_fault_in_the_work_is_an_engine_fault(monkeypatch) -> None:
    with pytest.raises(EngineFault, match="a cluster worker failed: .*engine broke"):
        _run([Actor("a", fault=True)], [1, 2], monkeypatch=monkeypatch)


def test_every_actor_lost_is_an_engine_fault_naming_why(monkeypatch) -> None:
    with pytest.raises(EngineFault, match="every cluster worker was lost .*worker 0 lost"):
        _run([Actor("a", dies_after=1)], [1, 2, 3], monkeypatch=monkeypatch)
