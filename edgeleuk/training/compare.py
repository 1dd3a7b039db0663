"""``edgeleuk compare``: the paper's Figure 4 and its one-sided Mann-Whitney U tests.

For each sweep folder (``seed-N`` runs from ``edgeleuk sweep``) the finished
runs' per-epoch validation F1 curves are drawn as mean +- std on one figure,
and the first sweep's best-epoch F1 scores are tested against each other
sweep's with ``scipy.stats.mannwhitneyu(first, other, alternative="greater")``,
as the paper tested PROPOSAL > NOSPECLR and PROPOSAL > NOROT.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from edgeleuk.core.errors import UsageError
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.training.plots import plot_sweep_curves
from edgeleuk.training.rundir import SYNTHETIC_NOTE, RunFiles, read_metrics, read_summary

log = logging.getLogger("edgeleuk.training")


@dataclass(frozen=True)
class SweepCurves:
    """Validation F1 of one sweep's finished runs.

    Attributes:
        name: Label (the folder name).
        path: Sweep folder.
        f1: Runs x epochs array of validation weighted F1.
        best_f1: Each run's best-epoch F1.
        synthetic: Trained on synthetic data.
    """

    name: str
    path: Path
    f1: np.ndarray
    best_f1: np.ndarray
    synthetic: bool


@dataclass(frozen=True)
class CompareReport:
    """Curves and tests of several sweeps.

    Attributes:
        sweeps: The sweeps, first one is the proposal tested against the rest.
        tests: One dict per other sweep: ``other``, ``u``, ``p``, sample sizes.
        figure: The PNG written.
    """

    sweeps: tuple[SweepCurves, ...]
    tests: tuple[dict[str, Any], ...] = ()
    figure: Path | None = None

    @property
    def synthetic(self) -> bool:
        return any(s.synthetic for s in self.sweeps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of the sweeps and the test results."""
        return {
            "sweeps": [{"name": s.name, "path": str(s.path), "runs": int(s.f1.shape[0]),
                        "best_f1": s.best_f1.tolist(), "best_f1_mean": float(s.best_f1.mean()),
                        "best_f1_std": float(s.best_f1.std()),
                        "f1_mean_per_epoch": s.f1.mean(axis=0).tolist(),
                        "f1_std_per_epoch": s.f1.std(axis=0).tolist()} for s in self.sweeps],
            "mann_whitney_u": list(self.tests),
            "figure": None if self.figure is None else str(self.figure),
            "synthetic": self.synthetic,
        }

    def to_markdown(self) -> str:
        """The comparison as a Markdown table (SYNTHETIC-labelled when any sweep was)."""
        lines = ["## Sweep comparison (validation weighted F1 of each run's best epoch)", ""]
        if self.synthetic:
            lines += [f"> {SYNTHETIC_NOTE}", ""]
        lines += ["| Sweep | Runs | Mean ± Std (%) | Min (%) | Max (%) |", "|---|---:|---:|---:|---:|"]
        for s in self.sweeps:
            b = 100 * s.best_f1
            lines.append(f"| {s.name} | {len(b)} | {b.mean():.2f} ± {b.std():.2f} | {b.min():.2f} | {b.max():.2f} |")
        if self.tests:
            first = self.sweeps[0].name
            lines += ["", f"One-sided Mann-Whitney U tests, H1: {first} > other", "",
                      "| Other | U | p |", "|---|---:|---:|"]
            lines += [f"| {t['other']} | {t['u']:.1f} | {t['p']:.4g} |" for t in self.tests]
        if self.figure is not None:
            lines += ["", f"Figure: `{self.figure}`"]
        return "\n".join(lines)


def load_sweep(path: str | Path, name: str | None = None) -> SweepCurves:
    """Read the finished ``seed-*`` runs of a sweep folder.

    Raises:
        UsageError: The folder has no finished runs.
    """
    path = Path(path)
    curves, best, synthetic = [], [], False
    for run in sorted(path.glob("seed-*"), key=lambda p: _seed_number(p.name)):
        files = RunFiles(run)
        summary = read_summary(files)
        if summary is None:
            log.warning("skipping %s: not finished", run)
            continue
        curves.append([line["f1"] for line in read_metrics(files.metrics)])
        best.append(summary.best_metrics["f1"])
        synthetic |= summary.synthetic
    if not curves:
        raise UsageError(f"{path} holds no finished runs (seed-N/summary.json); run `edgeleuk sweep` first")
    epochs = min(len(c) for c in curves)
    if any(len(c) != epochs for c in curves):
        log.warning("%s: runs have different epoch counts; curves cut to %d epochs", path, epochs)
    return SweepCurves(name=name or path.name, path=path, f1=np.array([c[:epochs] for c in curves]),
                       best_f1=np.array(best, dtype=np.float64), synthetic=synthetic)


def _seed_number(name: str) -> int:
    tail = name.removeprefix("seed-")
    return int(tail) if tail.isdigit() else 1 << 30


def _names(paths: Sequence[Path]) -> list[str]:
    """Folder names, made unique with the parent folder when two sweeps share one."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def mann_whitney(first: SweepCurves, other: SweepCurves) -> dict[str, Any]:
    """One-sided test that ``first``'s best F1 scores are greater than ``other``'s."""
    res = mannwhitneyu(first.best_f1, other.best_f1, alternative="greater")
    return {"first": first.name, "other": other.name, "u": float(res.statistic), "p": float(res.pvalue),
            "n_first": len(first.best_f1), "n_other": len(other.best_f1)}


def compare_sweeps(sweeps: Sequence[str | Path], out: str | Path = "compare") -> CompareReport:
    """Figure 4 and Mann-Whitney U tests of the first sweep against each other one.

    Args:
        sweeps: Sweep folders; the first is the one tested for being better.
        out: Folder for ``compare_f1.png``, ``compare.md`` and ``compare.json``.

    Raises:
        UsageError: No sweeps, or a sweep without finished runs.
    """
    paths = [Path(s) for s in sweeps]
    if not paths:
        raise UsageError("give at least one sweep folder")
    loaded = [load_sweep(p, n) for p, n in zip(paths, _names(paths), strict=True)]
    out = Path(out)
    figure = plot_sweep_curves({s.name: s.f1 for s in loaded}, out / "compare_f1.png",
                               synthetic=any(s.synthetic for s in loaded))
    tests = tuple(mann_whitney(loaded[0], other) for other in loaded[1:])
    report = CompareReport(sweeps=tuple(loaded), tests=tests, figure=figure)
    atomic_write_text(out / "compare.md", report.to_markdown() + "\n")
    atomic_write_text(out / "compare.json", json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return report
