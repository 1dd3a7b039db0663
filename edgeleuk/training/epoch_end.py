"""What rank 0 does after each epoch and at the end of a run: validate, keep the best, write files."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from edgeleuk.atomic import atomic_write_text
from edgeleuk.checkpoint import save_checkpoint
from edgeleuk.training.evaluate import EvalResult, evaluate
from edgeleuk.training.plots import plot_curves, plot_subjects
from edgeleuk.training.rundir import (
    SYNTHETIC_NOTE,
    TrainResult,
    append_metrics,
    write_predictions,
    write_skipped,
    write_summary,
)

if TYPE_CHECKING:  # pragma: no cover
    from edgeleuk.training.loop import Trainer

log = logging.getLogger("edgeleuk.training")

#: Metrics stored in the checkpoint's ``val_metrics`` and reported in tables.
CHECKPOINT_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "recall", "f1", "auc",
                      "confusion", "loss")


class EpochRecorder:
    """Validation and bookkeeping of one run (rank 0 only).

    Args:
        trainer: The run; its network, state, files and splits are read and updated.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        self.val_loader = trainer.val_loader()

    def record(self, epoch: int, train_loss: float, n_train: int, skipped: dict[str, str],
               lrs: dict[str, float], tic: float) -> dict[str, Any]:
        """Validate after ``epoch``, update ``best.pt``, append the metrics line; return that line."""
        t, state = self.t, self.t.state
        val_tic = time.perf_counter()
        ev = self._validate(epoch)
        val_seconds = time.perf_counter() - val_tic
        state.skipped.update(skipped)
        state.skipped.update({str(t.splits.val[i].path): why for i, why in ev.skipped.items()})
        metrics = ev.metrics
        improved = metrics["f1"] > state.best_f1
        if improved:
            state.best_f1, state.best_epoch = float(metrics["f1"]), epoch
            self._save_best(epoch, ev)
        line = {"epoch": epoch, "train_loss": train_loss, "val_loss": ev.loss, **_plain(metrics),
                "lr": lrs, "seconds": round(time.perf_counter() - tic, 3),
                "val_seconds": round(val_seconds, 3), "train_images": n_train,
                "val_images": len(ev.labels), "skipped": len(state.skipped)}
        append_metrics(t.files.metrics, line)
        state.history.append(line)
        if state.skipped:
            write_skipped(t.files.skipped, state.skipped)
            log.warning("%d unreadable images so far were skipped; see %s", len(state.skipped),
                        t.files.skipped)
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, weighted F1 %.4f, acc %.4f%s (%.0f s)",
                 epoch + 1, t.recipe.epochs, train_loss, ev.loss, metrics["f1"], metrics["accuracy"],
                 "  * best" if improved else "", line["seconds"])
        return line

    def _validate(self, epoch: int) -> EvalResult:
        t = self.t
        bar = tqdm(total=len(self.val_loader.dataset), desc=f"epoch {epoch + 1}/{t.recipe.epochs} validate",
                   unit="cell", file=sys.stderr, leave=False, disable=None)
        try:
            return evaluate(t.net, self.val_loader, meta=t.meta, pos_weight=t.pos_weight, device=t.device,
                            amp=t.amp, progress=bar.update)
        finally:
            bar.close()

    def _save_best(self, epoch: int, ev: EvalResult) -> None:
        t = self.t
        val_metrics = {k: v for k, v in _plain(ev.metrics).items() if k in CHECKPOINT_METRICS}
        val_metrics["loss"] = ev.loss
        meta = t.meta.replace(val_metrics=val_metrics,
                              extra={"epoch": epoch, "synthetic": t.splits.synthetic,
                                     "val_images": len(ev.labels), "pos_weight": t.pos_weight})
        save_checkpoint(t.files.best, t.net.state_dict(), meta)
        write_predictions(t.files.predictions, ev.prediction_rows(t.splits.val))
        subjects = ev.subject_accuracy(t.splits.val, t.meta.threshold)
        atomic_write_text(t.files.subjects, json.dumps({"epoch": epoch, "accuracy": _plain(subjects)},
                                                       indent=2, sort_keys=True) + "\n")

    def finish(self, result: TrainResult) -> None:
        """Figures and ``summary.json`` for a finished run; a summary in the log either way."""
        t = self.t
        if result.finished:
            self._plots()
            write_summary(t.files, result)
        m = result.best_metrics
        log.info("%s %s: %d/%d epochs, best epoch %d with weighted F1 %.4f; files in %s",
                 result.recipe, "finished" if result.finished else "stopped", result.epochs_done,
                 result.epochs, result.best_epoch, m.get("f1", float("nan")), result.out)

    def _plots(self) -> None:
        t = self.t
        synthetic = t.splits.synthetic
        try:
            plot_curves(t.state.history, t.files.curves_png, synthetic)
            if t.files.subjects.is_file():
                subjects = json.loads(t.files.subjects.read_text(encoding="utf-8"))["accuracy"]
                plot_subjects(subjects, t.files.subjects_png, synthetic)
        except Exception as exc:  # noqa: BLE001 - a figure must never cost a finished run its summary
            log.warning("could not draw the figures: %s", exc)
        if synthetic:
            log.warning(SYNTHETIC_NOTE)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays to JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value
