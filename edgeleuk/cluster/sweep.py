"""``edgeleuk sweep ... --cluster ADDRESS``: one Ray task per seed, then the table once.

Each unfinished seed becomes one Ray task that runs the ordinary trainer into ``OUT/seed-N``
(one GPU per task where the cluster has GPUs, the recipe's threads as CPUs otherwise). Seeds
already finished are not rerun and interrupted ones resume, exactly as the local sweep; when
every task is done, the local :func:`edgeleuk.training.sweep.run_sweep` finds all seeds
finished and writes Table 2 (so both write the same table).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgeleuk.cluster import connect
from edgeleuk.core.errors import EdgeleukError, UsageError
from edgeleuk.training.loop import train
from edgeleuk.training.recipe import Recipe, load_recipe
from edgeleuk.training.rundir import RunFiles, read_summary
from edgeleuk.training.sweep import SweepTable, run_sweep, seed_dir

log = logging.getLogger("edgeleuk.training")


class SweepFailed(EdgeleukError):
    """Some seeds failed on the cluster: no table is written (exit code 1)."""


def _train_seed(data: str, recipe: Any, seed: int, out: str, pretrained: str | None,
                train_kwargs: dict[str, Any]) -> int:
    """The body of one seed's Ray task (runs on a worker)."""
    files = RunFiles(Path(out))
    train(data, recipe=recipe, out=files.root, seed=seed, pretrained=pretrained,
          resume=files.last.is_file(), **train_kwargs)
    return seed


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


def task_resources(resources: dict[str, float], recipe: Recipe) -> dict[str, float]:
    """One GPU per task where the cluster has GPUs and the recipe may use one; CPUs otherwise."""
    if resources.get("GPU", 0) >= 1 and recipe.device != "cpu":
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": max(1, recipe.threads or 1)}


def cluster_sweep(data: str | Path, recipe: str | Path | Recipe = "train/paper.toml", seeds: int = 24,
                  out: str | Path = "runs/sweep", pretrained: str | None = None, *, address: str = "auto",
                  **train_kwargs: Any) -> SweepTable:
    """Train seeds ``0..seeds-1`` as Ray tasks (skipping finished ones) and write Table 2 once.

    Args:
        data: C-NMC data root (a path every node sees).
        recipe: Recipe, or a TOML path / name in ``train/``.
        seeds: Number of seeds.
        out: Sweep folder (on storage every node sees).
        pretrained: Passed to every run.
        address: See :func:`edgeleuk.cluster.connect`.
        **train_kwargs: Passed to :func:`edgeleuk.training.train`.

    Raises:
        UsageError: ``seeds < 1``, a folder of another recipe, Ray missing or unreachable.
        SweepFailed: A seed's task failed (the others' runs are kept; rerun to resume).
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out).resolve()
    todo = pending_seeds(out, seeds, rec.name)
    if todo:
        ray = connect(address)
        resources = task_resources(ray.cluster_resources(), rec)
        task = ray.remote(**resources)(_train_seed)
        log.info("sweep %s: %d seed(s) as Ray tasks (%s each)", out, len(todo), resources)
        refs = {seed: task.remote(str(Path(data).resolve()), rec, seed, str(seed_dir(out, seed)), pretrained,
                                  train_kwargs) for seed in todo}
        failed = []
        for seed, ref in refs.items():
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - report every failed seed, not only the first
                failed.append(f"seed {seed}: {exc}")
        if failed:
            raise SweepFailed("sweep: these seeds failed on the cluster (rerun to resume):\n" + "\n".join(failed))
    # Every seed is finished now: the local sweep trains nothing and writes the table.
    return run_sweep(data, recipe=rec, seeds=seeds, out=out, pretrained=pretrained, **train_kwargs)
