"""Headless PNG figures: the paper's Figures 2, 3 and 4.

Drawn on :class:`matplotlib.figure.Figure` objects, not through ``pyplot``: no
GUI backend is chosen and no global figure state is left behind.

Every figure drawn from synthetic data carries a visible SYNTHETIC label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from edgeleuk.io.atomic import atomic_path
from edgeleuk.training.rundir import SYNTHETIC_NOTE


def _save(fig: Figure, path: Path, synthetic: bool) -> Path:
    if synthetic:
        fig.text(0.5, 0.99, SYNTHETIC_NOTE, ha="center", va="top", color="crimson", fontsize=9,
                 fontweight="bold")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def plot_curves(history: Sequence[Mapping[str, Any]], path: Path, synthetic: bool = False) -> Path:
    """Figure 2: training loss, validation loss and validation weighted F1 per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.2))
    axes = fig.subplots(ncols=3)
    panels = [("train_loss", "Training set loss"), ("val_loss", "Preliminary test set loss"),
              ("f1", "Preliminary test set weighted F1")]
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.plot(epochs, [h[key] for h in history], marker="o")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.93 if synthetic else 1))
    return _save(fig, path, synthetic)


def plot_subjects(subjects: Mapping[str, Mapping[str, Any]], path: Path, synthetic: bool = False) -> Path:
    """Figure 3: accuracy per validation subject, healthy subjects in a second colour.

    Args:
        subjects: ``edgeleuk.evaluation.metrics.per_subject_accuracy`` output (``accuracy``, ``healthy``, ``n``).
        path: PNG to write.
        synthetic: Label the figure as synthetic.
    """
    names = sorted(subjects, key=_subject_key)
    colors = ["tab:green" if subjects[n].get("healthy") else "tab:red" for n in names]
    fig = Figure(figsize=(max(5.0, 0.45 * len(names) + 1.5), 3.2))
    ax = fig.subplots()
    ax.bar(range(len(names)), [subjects[n]["accuracy"] for n in names], color=colors, width=0.6)
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title("Per-subject accuracy on the preliminary test set (best epoch)", fontsize=10)
    ax.legend(handles=[Patch(color="tab:red", label="ALL patient"), Patch(color="tab:green", label="healthy (H)")],
              fontsize=8, loc="lower right")
    fig.tight_layout(rect=(0, 0, 1, 0.92 if synthetic else 1))
    return _save(fig, path, synthetic)


def _subject_key(name: str) -> tuple:
    """Patients before healthy subjects, then by number: 4, 10, H2, H11."""
    healthy = name.upper().startswith("H")
    digits = name[1:] if healthy else name
    return (healthy, int(digits) if digits.isdigit() else 1 << 30, name)


def plot_sweep_curves(curves: Mapping[str, np.ndarray], path: Path, synthetic: bool = False) -> Path:
    """Figure 4: mean +- std validation F1 per epoch of several sweeps (runs x epochs arrays)."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for name, f1 in curves.items():
        epochs = np.arange(f1.shape[1])
        mean, std = f1.mean(axis=0), f1.std(axis=0)
        ax.plot(epochs, mean, marker="o", label=f"{name} (n={f1.shape[0]})")
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("weighted F1 (preliminary test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93 if synthetic else 1))
    return _save(fig, path, synthetic)
