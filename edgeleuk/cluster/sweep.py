"""``edgeleuk sweep ... --cluster ADDRESS``: one Ray task per seed, then the table once.

Each unfinished seed becomes one Ray task that runs the ordinary trainer into ``OUT/seed-N``
(one GPU per task where the nodes have GPUs; otherwise the recipe's threads as CPUs, or the
smallest node's CPUs when the recipe leaves threads to torch), sized from the nodes before
anything is submitted (:mod:`edgeleuk.cluster.placement`: a task no node can hold is exit 2).
Each task reports a heartbeat while it trains; a seed with no heartbeat for ``--cluster-timeout``
seconds (never started, or its node was lost and the task not restarted) stops the sweep with
exit 1, and a task whose node died is submitted again once (the seed resumes from ``last.pt``).
Seeds already finished are not rerun and interrupted ones resume, exactly as the local sweep;
when every task is done, the local :func:`edgeleuk.training.sweep.run_sweep` finds all seeds
finished and writes Table 2 (so both write the same table).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgeleuk.cluster import ClusterOptions, alive_nodes, connect
from edgeleuk.cluster.placement import Ask, Node, place
from edgeleuk.core.errors import EdgeleukError, UsageError
from edgeleuk.training.loop import train
from edgeleuk.training.recipe import Recipe, load_recipe
from edgeleuk.training.rundir import RunFiles, read_summary
from edgeleuk.training.sweep import SweepTable, run_sweep, seed_dir

log = logging.getLogger("edgeleuk.training")


class SweepFailed(EdgeleukError):
    """Some seeds failed on the cluster: no table is written (exit code 1)."""


RESUBMITS = 1  # a seed whose node died is submitted again this many times (it resumes from last.pt)
NOTE_S = 30.0  # how often a wait is reported in the log


def _train_seed(data: str, recipe: Any, seed: int, out: str, pretrained: str | None,
                train_kwargs: dict[str, Any], beat_s: float) -> Iterator[str]:
    """The body of one seed's Ray task (runs on a worker): a heartbeat every ``beat_s`` while it trains.

    A streaming generator: the driver sees each heartbeat as it comes, so a task that never
    starts or whose node is lost shows as silence. Training runs in a thread of the task.
    """
    import ray

    yield f"node {ray.get_runtime_context().get_node_id()[:8]}"
    files = RunFiles(Path(out))
    failure: list[BaseException] = []

    def body() -> None:
        try:
            train(data, recipe=recipe, out=files.root, seed=seed, pretrained=pretrained,
                  resume=files.last.is_file(), **train_kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the task's own thread below
            failure.append(exc)

    worker = threading.Thread(target=body, name=f"train-seed-{seed}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(beat_s)
        yield "beat"
    if failure:
        raise failure[0]


def pending_seeds(out: Path, seeds: int, recipe_name: str) -> list[int]:
    """Seeds without a finished run; refuses a folder that holds another recipe's run."""
    todo = []
    for seed in range(seeds):
        files = RunFiles(seed_dir(out, seed))
        done = read_summary(files)
        if done is not None and done.recipe != recipe_name:
            raise UsageError(f"{files.root} holds a {done.recipe!r} run, not {recipe_name!r}; use another --out")
        if done is None:
            todo.append(seed)
    return todo


def task_resources(nodes: Sequence[Node], recipe: Recipe) -> dict[str, float]:
    """Ray resources of one seed's task, checked against the nodes (exit 2 if none can hold it).

    One GPU (and the recipe's threads, or 1, as CPUs) where a node has a GPU and the recipe may
    use one; otherwise the recipe's threads as CPUs, or the smallest node's CPUs.
    """
    gpu = recipe.device == "cuda" or (recipe.device == "auto" and any(n.gpus >= 1 for n in nodes))
    ask = Ask("task", threads=recipe.threads or (1 if gpu else None), gpus=1 if gpu else 0, cap=None,
              threads_flag="the recipe's threads =",
              gpu_fix=f"recipe {recipe.name!r} has device = {recipe.device!r}: set device = \"cpu\" or add a GPU node")
    placed = place(nodes, ask)
    log.info("sweep tasks: %s", placed.describe("task"))
    resources = {"num_cpus": placed.threads}
    return {**resources, "num_gpus": 1} if gpu else resources


def cluster_sweep(data: str | Path, recipe: str | Path | Recipe = "train/paper.toml", seeds: int = 24,
                  out: str | Path = "runs/sweep", pretrained: str | None = None, *, address: str = "auto",
                  cluster: ClusterOptions | None = None, **train_kwargs: Any) -> SweepTable:
    """Train seeds ``0..seeds-1`` as Ray tasks (skipping finished ones) and write Table 2 once.

    Args:
        data: C-NMC data root (a path every node sees).
        recipe: Recipe, or a TOML path / name in ``train/``.
        seeds: Number of seeds.
        out: Sweep folder (on storage every node sees).
        pretrained: Passed to every run.
        address: See :func:`edgeleuk.cluster.connect`.
        cluster: How long a seed may go without a heartbeat.
        **train_kwargs: Passed to :func:`edgeleuk.training.train`.

    Raises:
        UsageError: ``seeds < 1``, a folder of another recipe, Ray missing or unreachable, a
            task no node can hold.
        SweepFailed: A seed's task failed or went silent (the others' runs are kept; rerun to resume).
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out).resolve()
    todo = pending_seeds(out, seeds, rec.name)
    if todo:
        ray = connect(address)
        task = ray.remote(**task_resources(alive_nodes(ray), rec), max_retries=0,
                          num_returns="streaming")(_train_seed)
        stall_s = (cluster or ClusterOptions()).stall_s
        log.info("sweep %s: %d seed(s) as Ray tasks", out, len(todo))

        def submit(seed: int) -> Any:
            return task.remote(str(Path(data).resolve()), rec, seed, str(seed_dir(out, seed)), pretrained,
                               train_kwargs, min(NOTE_S, stall_s / 3))

        failed = _follow(ray, {seed: submit(seed) for seed in todo}, submit, stall_s)
        if failed:
            raise SweepFailed("sweep: these seeds failed on the cluster (rerun to resume):\n" + "\n".join(failed))
    # Every seed is finished now: the local sweep trains nothing and writes the table.
    return run_sweep(data, recipe=rec, seeds=seeds, out=out, pretrained=pretrained, **train_kwargs)


def _follow(ray: Any, tasks: dict[int, Any], submit: Any, stall_s: float) -> list[str]:
    """Wait for every seed's task; returns what failed. Seeds silent for ``stall_s`` fail and are cancelled."""
    from ray.exceptions import RayError, RayTaskError

    seed_of = {id(gen): seed for seed, gen in tasks.items()}
    heard = {seed: time.monotonic() for seed in tasks}
    resubmits = dict.fromkeys(tasks, 0)
    failed: list[str] = []
    noted = time.monotonic()
    while tasks:
        ready, _ = ray.wait(list(tasks.values()), num_returns=1, timeout=min(NOTE_S, stall_s))
        for gen in ready:
            seed = seed_of[id(gen)]
            try:
                note = ray.get(next(gen))
            except StopIteration:  # the seed is trained
                del tasks[seed]
                continue
            except RayTaskError as exc:  # the training itself failed
                failed.append(f"seed {seed}: {exc}")
                del tasks[seed]
                continue
            except RayError as exc:  # its worker or node died: once more, resuming from last.pt
                if resubmits[seed] >= RESUBMITS:
                    failed.append(f"seed {seed}: lost its node again ({exc})")
                    del tasks[seed]
                    continue
                resubmits[seed] += 1
                log.warning("sweep: seed %d lost its worker (%s); submitted again, it resumes", seed, exc)
                tasks[seed] = submit(seed)
                seed_of[id(tasks[seed])] = seed
                note = "resubmitted"
            heard[seed] = time.monotonic()
            if note != "beat":
                log.info("sweep: seed %d %s", seed, note if note == "resubmitted" else f"started on {note}")
        now = time.monotonic()
        silent = sorted(seed for seed in tasks if now - heard[seed] >= stall_s)
        if silent:
            for seed in tasks:
                ray.cancel(tasks[seed], force=True)
            failed += [f"seed {seed}: no progress for {stall_s:g} s (it never started: no node has the "
                       "resources free, or its node was lost; see `ray status`, or allow longer with "
                       "--cluster-timeout)" for seed in silent]
            failed += [f"seed {seed}: cancelled" for seed in sorted(set(tasks) - set(silent))]
            return failed
        if now - noted >= NOTE_S:
            waiting = ", ".join(f"seed {s} {now - heard[s]:.0f} s" for s in sorted(tasks))
            log.info("sweep: waiting for %d seed(s) (last heard: %s)", len(tasks), waiting)
            noted = now
    return failed
