"""The files of one run folder and the result a finished run reports.

A run folder holds ``best.pt`` (the edgeleuk checkpoint of the best epoch),
``last.pt`` (resumable state), ``metrics.jsonl`` (one line per epoch),
``summary.json`` (written last: its presence means the run finished),
``skipped.txt`` (unreadable images, if any), ``val_predictions.csv`` and
``subjects.json`` of the best epoch, ``train.log`` and the PNG figures.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import UsageError
from edgeleuk.io.atomic import atomic_write_text

SYNTHETIC_NOTE = "SYNTHETIC DATA: says nothing about leukaemia diagnosis"


@dataclass(frozen=True)
class RunFiles:
    """Paths inside one run folder."""

    root: Path

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.txt"

    @property
    def predictions(self) -> Path:
        return self.root / "val_predictions.csv"

    @property
    def subjects(self) -> Path:
        return self.root / "subjects.json"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def curves_png(self) -> Path:
        return self.root / "curves.png"

    @property
    def subjects_png(self) -> Path:
        return self.root / "subjects.png"


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` from the history (drops lines of an epoch a crash cut short)."""
    atomic_write_text(path, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


def append_metrics(path: Path, line: dict[str, Any]) -> None:
    """Append one epoch's line (a run rewrites the file from ``last.pt`` when it resumes)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl`` (empty when the file is missing)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_skipped(path: Path, skipped: dict[str, str]) -> None:
    """One ``path<TAB>reason`` line per unreadable file, sorted."""
    atomic_write_text(path, "".join(f"{p}\t{why}\n" for p, why in sorted(skipped.items())))


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """Validation predictions of the best epoch as CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "subject", "label", "logit", "prob"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


@dataclass(frozen=True)
class TrainResult:
    """What a run achieved and where its files are.

    Attributes:
        out: Run folder.
        recipe: Recipe name.
        seed: Seed.
        epochs: Epochs the recipe asks for.
        epochs_done: Epochs finished so far.
        best_epoch: Epoch (0-based) of the best validation F1.
        best_metrics: Validation metrics of that epoch.
        finished: Whether every epoch ran (False after ``stop_after``).
        seconds: Wall time of this invocation.
        synthetic: Trained on ``edgeleuk synth`` data.
        skipped: Number of unreadable images.
        data_fingerprint: Hash of the training file list.
    """

    out: Path
    recipe: str
    seed: int
    epochs: int
    epochs_done: int
    best_epoch: int
    best_metrics: dict[str, Any] = field(default_factory=dict)
    finished: bool = True
    seconds: float = 0.0
    synthetic: bool = False
    skipped: int = 0
    data_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (``summary.json``)."""
        d = asdict(self)
        d["out"] = str(self.out)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "out": Path(d["out"])})

    def describe(self) -> str:
        """Best epoch, its validation metrics and where the run's files are."""
        files = RunFiles(self.out)
        m = self.best_metrics
        state = "finished" if self.finished else f"stopped after epoch {self.epochs_done - 1} (resume with --resume)"
        lines = [(f"run {self.out} ({self.recipe}, seed {self.seed}): {state}, "
                  f"{self.epochs_done}/{self.epochs} epochs in {self.seconds:.0f} s")]
        if m:
            shown = ", ".join(f"{label} {_fmt(m.get(key))}" for key, label in (
                ("f1", "weighted F1"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                ("specificity", "specificity"), ("auc", "AUC")))
            lines.append(f"best epoch {self.best_epoch}: {shown}")
        lines += [f"  checkpoint  {files.best}", f"  resumable   {files.last}",
                  f"  metrics     {files.metrics}", f"  figures     {files.curves_png}, {files.subjects_png}"]
        if self.skipped:
            lines.append(f"  skipped     {self.skipped} unreadable images, listed in {files.skipped}")
        if self.synthetic:
            lines.append(f"  {SYNTHETIC_NOTE}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_summary(files: RunFiles, result: TrainResult) -> None:
    """Write ``summary.json`` atomically."""
    atomic_write_text(files.summary, json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")


def read_summary(files: RunFiles) -> TrainResult | None:
    """The finished run's result, or None if the run has not finished."""
    if not files.summary.is_file():
        return None
    try:
        data = json.loads(files.summary.read_text(encoding="utf-8"))
        return TrainResult.from_dict({**data, "out": str(files.root)})  # the folder may have moved
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{files.summary} is damaged ({exc}); delete it and run with --resume") from exc
