"""A fixed pool of Ray actors working through numbered chunks, never waiting for ever.

Each actor loads its state once (the model) and then takes chunks one call at a time, at most
``IN_FLIGHT`` ahead; chunks go only to actors that have started, so an actor that cannot start
(its node is busy or gone) holds no work. An actor that is lost (its node died, its process was
killed) hands its chunks back to the others; an exception raised by the work itself is an
:class:`~edgeleuk.core.errors.EngineFault`. When nothing happens for ``stall_s`` seconds (no
chunk done, no actor started), the pool stops with an :class:`EngineFault` saying so; until then
it says every ``NOTE_S`` seconds what it is waiting for. Every actor is killed at the end.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeleuk.core.errors import EngineFault

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # chunks queued per actor: the next is ready when one finishes
NOTE_S = 30.0  # how often a wait is reported in the log


@dataclass
class _State:
    """What the pool knows while it runs (the actors by number)."""

    actors: dict[int, Any]
    starting: dict[Any, int]  # ``ready`` call -> actor
    running: dict[Any, tuple[int, int]] = field(default_factory=dict)  # chunk call -> (actor, chunk)
    started: set[int] = field(default_factory=set)
    queue: collections.deque[int] = field(default_factory=collections.deque)
    lost: list[str] = field(default_factory=list)

    def busy(self, k: int) -> int:
        return sum(1 for a, _ in self.running.values() if a == k)


def _short(exc: BaseException) -> str:
    """One line of why: the remote exception itself where Ray carries it, else the last line."""
    exc = getattr(exc, "cause", None) or exc
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def run_chunks(ray: Any, make_actor: Callable[[], Any], workers: int, chunks: Sequence[Any],
               stall_s: float, what: str = "worker") -> Iterator[tuple[int, Any]]:
    """Yield ``(chunk index, result)`` as the actors finish them (in any order).

    Args:
        ray: The connected ``ray`` module.
        make_actor: Starts one actor; it has ``ready()`` (returns where it runs) and ``run(chunk)``.
        workers: Actors to start.
        chunks: The work; each goes to ``run`` once (again only when its actor was lost).
        stall_s: Seconds without progress before giving up.
        what: The actors' name in messages.

    Raises:
        EngineFault: The work raised, every actor was lost, or nothing moved for ``stall_s``.
    """
    actors = {k: make_actor() for k in range(workers)}
    state = _State(actors, {actors[k].ready.remote(): k for k in actors}, queue=collections.deque(range(len(chunks))))
    done = 0
    last = noted = time.monotonic()
    try:
        while done < len(chunks):
            _dispatch(state, chunks)
            if not state.actors:
                raise EngineFault(f"every cluster {what} was lost ({'; '.join(state.lost)})")
            waiting = [*state.starting, *state.running]
            ready, _ = ray.wait(waiting, num_returns=1, timeout=min(NOTE_S, stall_s))
            now = time.monotonic()
            if not ready:
                if now - last >= stall_s:
                    raise EngineFault(_stalled(state, workers, done, len(chunks), stall_s, what))
                if now - noted >= NOTE_S:
                    log.warning("%s", _stalled(state, workers, done, len(chunks), now - last, what, waiting=True))
                    noted = now
                continue
            last = noted = now
            for ref in ready:
                result = _collect(ray, state, ref, what)
                if result is not None:
                    done += 1
                    yield result
    finally:
        for actor in actors.values():  # lost ones too: nothing of this job stays on the cluster
            ray.kill(actor)


def _dispatch(state: _State, chunks: Sequence[Any]) -> None:
    """Give queued chunks to started actors, up to ``IN_FLIGHT`` each."""
    for k in sorted(state.started):
        while state.queue and state.busy(k) < IN_FLIGHT:
            i = state.queue.popleft()
            state.running[state.actors[k].run.remote(chunks[i])] = (k, i)


def _collect(ray: Any, state: _State, ref: Any, what: str) -> tuple[int, Any] | None:
    """Take one finished call: a started actor, a chunk's result, or a lost actor's chunks back."""
    from ray.exceptions import RayError, RayTaskError

    if ref in state.starting:
        k = state.starting.pop(ref)
        try:
            where = ray.get(ref)
        except RayError as exc:  # its node is gone, or its own start failed (the model did not load...)
            _lose(state, k, f"{what} {k} did not start: {_short(exc)}", what)
            return None
        state.started.add(k)
        log.info("cluster %s %d started on %s", what, k, where)
        return None
    if ref not in state.running:  # a call of an actor already given up (its chunks are queued again)
        return None
    k, i = state.running.pop(ref)
    try:
        return i, ray.get(ref)
    except RayTaskError as exc:  # raised by the work itself: a fault, not a lost node
        raise EngineFault(f"a cluster {what} failed: {_short(exc)}") from exc
    except RayError as exc:  # the actor or its node is gone: the others take its chunks
        _lose(state, k, f"{what} {k} lost: {_short(exc)}", what, also=(i,))
        return None


def _lose(state: _State, k: int, why: str, what: str, also: tuple[int, ...] = ()) -> None:
    """Forget actor ``k``; its running chunks (and ``also``) go back to the front of the queue, in order."""
    state.actors.pop(k, None)
    state.started.discard(k)
    mine = sorted({*also, *(i for a, i in state.running.values() if a == k)})
    state.running = {ref: (a, i) for ref, (a, i) in state.running.items() if a != k}
    state.queue.extendleft(reversed(mine))
    state.lost.append(why)
    log.warning("%s; %d %s(s) left, its chunks go to them", why, len(state.actors), what)


def _stalled(state: _State, workers: int, done: int, total: int, seconds: float, what: str,
             waiting: bool = False) -> str:
    """What the pool waits for: started actors, chunks done, the lost ones."""
    head = f"waiting {seconds:.0f} s" if waiting else f"no progress for {seconds:g} s"
    lost = f"; lost: {'; '.join(state.lost)}" if state.lost else ""
    tail = "" if waiting else (
        " (no node could start a worker, or a node was lost and not replaced; see `ray status`, "
        "or allow longer with --cluster-timeout)"
    )
    return (f"{head}: {len(state.started)} of {workers} cluster {what}(s) started, "
            f"{done} of {total} chunk(s) done{lost}{tail}")
