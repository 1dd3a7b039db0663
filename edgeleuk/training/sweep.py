"""``edgeleuk sweep``: one run per seed and the paper's Table 2.

Runs go one after another into ``OUT/seed-N``; a finished run (``summary.json``)
is skipped and an interrupted one resumed, so re-running the same command
continues a sweep. On a cluster, launch the seeds as independent jobs instead::

    edgeleuk train DATA --recipe paper --seed N --out SWEEP/seed-N --resume

and run ``edgeleuk sweep DATA --recipe ... --seeds 24 --out SWEEP`` once they are
done: it finds every run finished and only writes the table.

Table 2 reports, over the runs' best checkpoints (best validation weighted F1),
min, mean +- std and max of accuracy, sensitivity, specificity, weighted F1,
precision and recall, in percent. The std is numpy's population std (ddof=0),
as in the paper's ``plot.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.training.loop import train
from edgeleuk.training.recipe import Recipe, load_recipe
from edgeleuk.training.rundir import SYNTHETIC_NOTE, RunFiles, TrainResult, read_summary

log = logging.getLogger("edgeleuk.training")

#: Table 2 rows: metric key in a run's metrics and its label.
TABLE_METRICS = (("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                 ("f1", "F1-score (weighted)"), ("precision", "Precision (weighted)"),
                 ("recall", "Recall (weighted)"))


def seed_dir(out: Path, seed: int) -> Path:
    """Run folder of one seed in a sweep."""
    return Path(out) / f"seed-{seed}"


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64) * 100.0
    return {"min": float(a.min()), "mean": float(a.mean()), "std": float(a.std()), "max": float(a.max())}


@dataclass(frozen=True)
class SweepTable:
    """The paper's Table 2 for one sweep.

    Attributes:
        out: Sweep folder.
        recipe: Recipe name.
        runs: Each seed's finished run.
        rows: Metric key -> ``{"min", "mean", "std", "max"}`` in percent.
        selected: The run with the best validation F1 (its ``best.pt`` is the model to ship).
        synthetic: Runs trained on synthetic data.
    """

    out: Path
    recipe: str
    runs: tuple[TrainResult, ...]
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    selected: TrainResult | None = None
    synthetic: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of every run and the summary rows."""
        sel = self.selected
        return {
            "recipe": self.recipe, "runs": len(self.runs), "seeds": [r.seed for r in self.runs],
            "table2_percent": self.rows, "synthetic": self.synthetic,
            "best_f1_per_run": {str(r.seed): r.best_metrics.get("f1") for r in self.runs},
            "selected": None if sel is None else {
                "seed": sel.seed, "epoch": sel.best_epoch, "f1": sel.best_metrics.get("f1"),
                "checkpoint": str(RunFiles(sel.out).best)},
        }

    def to_markdown(self) -> str:
        """The paper's Table 2 as Markdown (SYNTHETIC-labelled on synthetic data)."""
        lines = [f"## Table 2: {self.recipe}, {len(self.runs)} runs (preliminary test set, best epoch)", ""]
        if self.synthetic:
            lines += [f"> {SYNTHETIC_NOTE}", ""]
        lines += ["| Metric | Min | Mean ± Std | Max |", "|---|---:|---:|---:|"]
        for key, label in TABLE_METRICS:
            s = self.rows.get(key)
            if s is not None:
                lines.append(f"| {label} | {s['min']:.2f} | {s['mean']:.2f} ± {s['std']:.2f} | {s['max']:.2f} |")
        if self.selected is not None:
            sel = self.selected
            lines += ["", (f"Selected model: seed {sel.seed}, epoch {sel.best_epoch}, weighted F1 "
                           f"{100 * sel.best_metrics['f1']:.2f}: `{RunFiles(sel.out).best}`")]
        return "\n".join(lines)


def sweep_table(out: Path, runs: list[TrainResult]) -> SweepTable:
    """Table 2 over finished runs."""
    if not runs:
        raise UsageError(f"no finished runs in {out}")
    rows = {}
    for key, _ in TABLE_METRICS:
        values = [r.best_metrics.get(key) for r in runs]
        if all(v is not None for v in values):
            rows[key] = _stats(values)
    selected = max(runs, key=lambda r: (r.best_metrics["f1"], -r.seed))
    return SweepTable(out=Path(out), recipe=runs[0].recipe, runs=tuple(runs), rows=rows, selected=selected,
                      synthetic=any(r.synthetic for r in runs))


def run_sweep(data: str | Path, recipe: str | Path | Recipe = "paper", seeds: int = 24,
              out: str | Path = "runs/sweep", pretrained: str | None = None, **train_kwargs: Any) -> SweepTable:
    """Train seeds ``0..seeds-1`` (skipping finished ones) and write Table 2.

    Args:
        data: C-NMC data root.
        recipe: Recipe, a packaged recipe name (``paper``) or a TOML file.
        seeds: Number of seeds.
        out: Sweep folder.
        pretrained: Passed to every run.
        **train_kwargs: Passed to :func:`edgeleuk.training.loop.train` (tests use ``stop_after``).

    Returns:
        The :class:`SweepTable`, also written as ``OUT/table2.md`` and ``OUT/table2.json``.

    Raises:
        UsageError: ``seeds < 1`` or a run folder that belongs to another recipe.
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out)
    runs = []
    for seed in range(seeds):
        files = RunFiles(seed_dir(out, seed))
        done = read_summary(files)
        if done is not None and done.recipe != rec.name:
            raise UsageError(f"{files.root} holds a {done.recipe!r} run, not {rec.name!r}; use another --out")
        if done is None:
            log.info("sweep %s: seed %d of %d", out, seed + 1, seeds)
            done = train(data, recipe=rec, out=files.root, seed=seed, pretrained=pretrained,
                         resume=files.last.is_file(), **train_kwargs)
        else:
            log.info("sweep %s: seed %d already finished", out, seed)
        runs.append(done)
    finished = [r for r in runs if r.finished]
    table = sweep_table(out, finished)
    atomic_write_text(out / "table2.md", table.to_markdown() + "\n")
    atomic_write_text(out / "table2.json", json.dumps(table.to_dict(), indent=2, sort_keys=True) + "\n")
    return table
