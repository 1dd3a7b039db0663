"""``edgeleuk train``: one run of a recipe, resumable, with per-epoch validation.

Each epoch trains on the recipe's folds, validates on the preliminary test set
with rotation TTA, appends a line to ``metrics.jsonl``, keeps ``best.pt`` (the
edgeleuk checkpoint with the best weighted F1) and rewrites ``last.pt``.

Reproducibility: the model is initialised from the seed; the sample order
comes from a sampler seeded with ``(seed, epoch)`` and each cell's
augmentation from a generator seeded with ``(seed, epoch, cell)``. No global
RNG is consumed while training, so ``--resume`` after an interruption gives
the same weights as an uninterrupted run (bit-exact on CPU; on a GPU as exact
as the kernels, see the recipe's ``deterministic`` flag).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from edgeleuk import __version__
from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.core.meta import TRAINING_KEY, ModelMeta
from edgeleuk.core.versions import library_versions
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.modeling.checkpoint import save_checkpoint
from edgeleuk.modeling.model import create_model, load_pretrained
from edgeleuk.training import distributed as ddp
from edgeleuk.training.augment import TrainTransform
from edgeleuk.training.dataset import CellDataset, Splits, class_counts, pos_weight, select_records, split_counts
from edgeleuk.training.evaluate import EvalResult, autocast, evaluate, use_gather
from edgeleuk.training.optics import training_scale, training_stain
from edgeleuk.training.plots import plot_curves, plot_subjects
from edgeleuk.training.recipe import Recipe, load_recipe
from edgeleuk.training.rundir import (
    SYNTHETIC_NOTE,
    RunFiles,
    TrainResult,
    append_metrics,
    read_summary,
    write_metrics,
    write_predictions,
    write_skipped,
    write_summary,
)
from edgeleuk.training.session import loader_signals, run_log, torch_settings
from edgeleuk.training.state import (
    TrainState,
    build_optimizer,
    build_scheduler,
    current_lrs,
    load_last,
    restore_rng,
    save_last,
    state_from,
)

log = logging.getLogger("edgeleuk.training")

#: Metrics stored in the checkpoint's ``val_metrics`` and reported in tables.
CHECKPOINT_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "recall", "f1", "auc",
                      "confusion", "loss")


def train(data: str | Path, recipe: str | Path | Recipe = "paper", out: str | Path = "runs/run",
          seed: int | None = None, pretrained: str | None = None, resume: bool = False,
          stop_after: int | None = None) -> TrainResult:
    """Train one model with a recipe.

    Args:
        data: C-NMC data root (public release or the paper's layout).
        recipe: Recipe, a packaged recipe name (``paper``, ``smoke``) or a TOML file.
        out: Run folder.
        seed: Overrides the recipe's seed.
        pretrained: ``"imagenet"``, a state-dict path or ``"none"``; overrides the recipe's.
        resume: Continue the run in ``out`` from ``last.pt`` (a finished run is
            returned as is; a missing ``last.pt`` starts afresh).
        stop_after: Stop once this many epochs are done (to test and demonstrate resuming).

    Returns:
        The run's :class:`TrainResult` (``.describe()`` for people).

    Raises:
        DataError: Missing or empty split, or a class without images.
        UsageError: ``out`` already holds a run and ``resume`` is False, or
            ``last.pt`` belongs to another recipe, seed or training set.
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if pretrained is not None:  # "none" on the command line: random initialisation
        rec = rec.replace(pretrained=None if pretrained.lower() == "none" else pretrained)
    rec = rec.replace(seed=rec.seed if seed is None else int(seed))
    files = RunFiles(Path(out))
    done = _check_out(files, resume)
    if done is not None and (done.recipe, done.seed) != (rec.name, rec.seed):
        raise UsageError(f"{files.root} holds a finished {done.recipe!r} run with seed {done.seed}, "
                         f"not {rec.name!r} with seed {rec.seed}; choose another --out")
    if done is not None:
        log.info("%s already finished; nothing to do", files.root)
        return done
    info, device = ddp.setup(rec.device)
    try:
        with torch_settings(rec, device), run_log(files, info.is_main), loader_signals():
            payload = load_last(files.last) if resume and files.last.is_file() else None
            trainer = Trainer(Path(data), rec, files, info, device, payload)
            return trainer.run(stop_after)
    finally:
        ddp.cleanup(info)


def _check_out(files: RunFiles, resume: bool) -> TrainResult | None:
    if resume:
        return read_summary(files)
    if files.last.exists() or files.summary.exists():
        raise UsageError(
            f"{files.root} already holds a run; add --resume to continue it, or choose a new --out "
            "(or delete the folder) to start over"
        )
    return None


def training_record(recipe: Recipe, splits: Splits) -> dict[str, Any]:
    """What the checkpoint says of its run for a model card: recipe, seed, epochs, start, data, versions."""
    init = recipe.pretrained
    if init is not None and init != "imagenet":
        init = Path(init).name  # a file name, not the trainer's folder layout
    return {
        "recipe": recipe.name, "description": recipe.description, "seed": recipe.seed, "epochs": recipe.epochs,
        "initialisation": init or "random", "smoke": recipe.smoke,
        "data": {"fingerprint": splits.fingerprint, "synthetic": splits.synthetic,
                 "train": split_counts(splits.train), "val": split_counts(splits.val)},
        "versions": {"edgeleuk": __version__, **library_versions(("torch", "timm"))},
    }


class Trainer:
    """Everything one run needs, built once; :meth:`run` does the epochs.

    Rank 0 also validates after each epoch, keeps ``best.pt``, appends to
    ``metrics.jsonl`` and, at the end, draws the figures and writes ``summary.json``.

    Args:
        data: Data root.
        recipe: Recipe with the effective seed and pretrained source.
        files: The run folder.
        info: Position in a ``torchrun`` job (single process: rank 0 of 1).
        device: Where to train.
        payload: A loaded ``last.pt`` to continue from, or None.
    """

    def __init__(self, data: Path, recipe: Recipe, files: RunFiles, info: ddp.DistInfo,
                 device: torch.device, payload: dict | None) -> None:
        self.recipe, self.files, self.info, self.device = recipe, files, info, device
        self.amp = recipe.amp and device.type == "cuda"
        _seed_everything(recipe.seed)
        self.splits = select_records(data, recipe)
        self.pos_weight = pos_weight(self.splits.train)
        self.net = create_model(recipe.arch)
        if payload is None and recipe.pretrained:
            load_pretrained(self.net, recipe.pretrained, arch=recipe.arch)
        self.net.to(device)
        self.model = ddp.wrap(self.net, info, device)
        self.optimizer = build_optimizer(self.net, recipe)
        self.scheduler = build_scheduler(self.optimizer, recipe)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.pos_weight], device=device))
        self.train_loader = self._train_loader()
        self.meta = ModelMeta(arch=recipe.arch, preprocess=recipe.preprocess, recipe=recipe.name,
                              seed=recipe.seed, data_fingerprint=self.splits.fingerprint,
                              extra={TRAINING_KEY: training_record(recipe, self.splits)},
                              um_per_px=training_scale(data, recipe.um_per_px),
                              stain_reference=training_stain(list(self.splits.train)))
        self.state = TrainState()
        if payload is not None:
            self._restore(payload)
        elif info.is_main:  # a first epoch that crashed before last.pt may have left lines behind
            write_metrics(files.metrics, [])
            files.skipped.unlink(missing_ok=True)
        self.validation = self.val_loader() if info.is_main else None
        self._log_setup()

    def _train_loader(self) -> DataLoader:
        rec = self.recipe
        dataset = CellDataset(self.splits.train, rec.preprocess, TrainTransform(rec.augment, rec.preprocess),
                              seed=rec.seed)
        self.sampler = ddp.train_sampler(dataset, self.info, rec.seed)
        loader = DataLoader(
            dataset, batch_size=ddp.per_process_batch(rec.batch_size, self.info), sampler=self.sampler,
            drop_last=True, num_workers=rec.num_workers, pin_memory=self.device.type == "cuda",
            # Workers end with each pass: a library call must leave no process behind when train()
            # returns (train() also gives back the SIGCHLD handler they install: loader_signals).
            persistent_workers=False,
            # Only seeds worker processes; no draw depends on it (see sample_rng).
            generator=torch.Generator().manual_seed(rec.seed),
        )
        if len(loader) == 0:
            raise DataError(
                f"{len(dataset)} training images do not fill one batch of {rec.batch_size}; "
                "lower batch_size or raise max_train_images"
            )
        return loader

    def val_loader(self) -> DataLoader:
        """Loader of the validation cells: PIL rotation stacks or raw cells for the gather TTA."""
        rec = self.recipe
        dataset = CellDataset(self.splits.val, rec.preprocess, raw=use_gather(rec.val_tta))
        return DataLoader(dataset, batch_size=rec.val_batch_size or rec.batch_size, shuffle=False,
                          num_workers=rec.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _restore(self, payload: dict) -> None:
        identity = self.recipe.identity()
        mismatch = [name for name, mine, theirs in (
            ("recipe", identity, {k: payload["recipe"].get(k) for k in identity}),
            ("seed", self.recipe.seed, payload["seed"]),
            ("training data", self.splits.fingerprint, payload["data_fingerprint"]),
        ) if mine != theirs]
        if mismatch:
            raise UsageError(
                f"{self.files.last} was written with a different {' and '.join(mismatch)}; resume with the "
                "same data, recipe and --seed, or start a new --out"
            )
        self.net.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        restore_rng(payload["rng"])
        self.state = state_from(payload)
        if self.info.is_main:  # drop lines of an epoch that was cut short
            write_metrics(self.files.metrics, self.state.history)
        log.info("resuming %s at epoch %d", self.files.root, self.state.next_epoch)

    def _log_setup(self) -> None:
        if not self.info.is_main:
            return
        s: Splits = self.splits
        log.info("recipe %s, seed %d, %s on %s%s", self.recipe.name, self.recipe.seed, self.recipe.arch,
                 self.device, f" x{self.info.world_size}" if self.info.enabled else "")
        log.info("train %d cells %s, validation %d cells %s, pos_weight n_hem/n_all = %.4f",
                 len(s.train), class_counts(s.train), len(s.val), class_counts(s.val), self.pos_weight)
        if s.synthetic:
            log.warning("SYNTHETIC data: results only show that the pipeline works")

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Run the remaining epochs (all, or up to ``stop_after`` done) and report."""
        start = time.perf_counter()
        last = self.recipe.epochs if stop_after is None else min(stop_after, self.recipe.epochs)
        for epoch in range(self.state.next_epoch, last):
            self._epoch(epoch)
        seconds = time.perf_counter() - start
        result = self.result(seconds)
        if self.info.is_main:
            self._finish(result)
        ddp.barrier(self.info)
        return result

    def _epoch(self, epoch: int) -> None:
        tic = time.perf_counter()
        lrs = current_lrs(self.optimizer)
        train_loss, n_train, skipped = self._train_epoch(epoch)
        if self.info.is_main:
            self._record(epoch, train_loss, n_train, skipped, lrs, tic)
        self.scheduler.step()
        self.state.next_epoch = epoch + 1
        if self.info.is_main:
            save_last(self.files.last, model=self.net, optimizer=self.optimizer, scheduler=self.scheduler,
                      scaler=self.scaler, state=self.state, recipe=self.recipe.to_dict(),
                      seed=self.recipe.seed, fingerprint=self.splits.fingerprint)
        ddp.barrier(self.info)

    def _train_epoch(self, epoch: int) -> tuple[float, int, dict[str, str]]:
        self.model.train()
        self.sampler.set_epoch(epoch)
        self.train_loader.dataset.set_epoch(epoch)
        records = self.splits.train
        loss_sum, seen, skipped = 0.0, 0, {}
        bar = _bar(len(self.train_loader), f"epoch {epoch + 1}/{self.recipe.epochs} train", self.info.is_main)
        tic = time.perf_counter()
        for batch in self.train_loader:
            pairs = zip(batch["index"], batch["error"], strict=True)
            skipped.update({str(records[int(i)].path): e for i, e in pairs if e})
            ok = torch.tensor([not e for e in batch["error"]])
            if ok.any():
                loss = self._step(batch["x"][ok], batch["label"][ok])
                loss_sum, seen = loss_sum + loss * int(ok.sum()), seen + int(ok.sum())
            elif self.info.enabled:  # every DDP rank must join the gradient all-reduce
                self._step(batch["x"], batch["label"], weight=0.0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}",
                            img_s=f"{seen / max(time.perf_counter() - tic, 1e-9):.1f}")
        bar.close()
        if skipped and not self.info.is_main:  # rank 0 lists its own; the others log theirs
            log.warning("rank %d skipped unreadable images: %s", self.info.rank, sorted(skipped))
        loss_sum, seen = ddp.sum_across([loss_sum, float(seen)], self.info, self.device)
        return loss_sum / max(seen, 1.0), int(seen), skipped

    def _step(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0) -> float:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, dtype=torch.float32, non_blocking=True)
        with autocast(self.device, self.amp):
            logits = self.model(x).reshape(-1)
        loss = self.criterion(logits.float(), y) * weight
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def result(self, seconds: float) -> TrainResult:
        """The run's result as it stands."""
        best = next((h for h in self.state.history if h["epoch"] == self.state.best_epoch), {})
        return TrainResult(
            out=self.files.root, recipe=self.recipe.name, seed=self.recipe.seed, epochs=self.recipe.epochs,
            epochs_done=self.state.next_epoch, best_epoch=self.state.best_epoch,
            best_metrics={k: v for k, v in best.items() if k not in ("lr", "seconds")},
            finished=self.state.next_epoch >= self.recipe.epochs, seconds=seconds,
            synthetic=self.splits.synthetic, skipped=len(self.state.skipped),
            data_fingerprint=self.splits.fingerprint,
        )

    def _record(self, epoch: int, train_loss: float, n_train: int, skipped: dict[str, str],
                lrs: dict[str, float], tic: float) -> dict[str, Any]:
        """Validate after ``epoch``, update ``best.pt``, append the metrics line; return that line."""
        state = self.state
        val_tic = time.perf_counter()
        ev = self._validate(epoch)
        val_seconds = time.perf_counter() - val_tic
        state.skipped.update(skipped)
        state.skipped.update({str(self.splits.val[i].path): why for i, why in ev.skipped.items()})
        metrics = ev.metrics
        improved = metrics["f1"] > state.best_f1
        if improved:
            state.best_f1, state.best_epoch = float(metrics["f1"]), epoch
            self._save_best(epoch, ev)
        line = {"epoch": epoch, "train_loss": train_loss, "val_loss": ev.loss, **_plain(metrics),
                "lr": lrs, "seconds": round(time.perf_counter() - tic, 3),
                "val_seconds": round(val_seconds, 3), "train_images": n_train,
                "val_images": len(ev.labels), "skipped": len(state.skipped)}
        append_metrics(self.files.metrics, line)
        state.history.append(line)
        if state.skipped:
            write_skipped(self.files.skipped, state.skipped)
            log.warning("%d unreadable images so far were skipped; see %s", len(state.skipped),
                        self.files.skipped)
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, weighted F1 %.4f, acc %.4f%s (%.0f s)",
                 epoch + 1, self.recipe.epochs, train_loss, ev.loss, metrics["f1"], metrics["accuracy"],
                 "  * best" if improved else "", line["seconds"])
        return line

    def _validate(self, epoch: int) -> EvalResult:
        desc = f"epoch {epoch + 1}/{self.recipe.epochs} validate"
        bar = tqdm(total=len(self.validation.dataset), desc=desc, unit="cell", file=sys.stderr, leave=False,
                   disable=None)
        try:
            return evaluate(self.net, self.validation, meta=self.meta, pos_weight=self.pos_weight,
                            device=self.device, amp=self.amp, progress=bar.update)
        finally:
            bar.close()

    def _save_best(self, epoch: int, ev: EvalResult) -> None:
        val_metrics = {k: v for k, v in _plain(ev.metrics).items() if k in CHECKPOINT_METRICS}
        val_metrics["loss"] = ev.loss
        meta = self.meta.replace(val_metrics=val_metrics,
                                 extra={**self.meta.extra, "epoch": epoch, "synthetic": self.splits.synthetic,
                                        "val_images": len(ev.labels), "pos_weight": self.pos_weight})
        save_checkpoint(self.files.best, self.net.state_dict(), meta)
        write_predictions(self.files.predictions, ev.prediction_rows(self.splits.val))
        subjects = ev.subject_accuracy(self.splits.val, self.meta.threshold)
        atomic_write_text(self.files.subjects, json.dumps({"epoch": epoch, "accuracy": _plain(subjects)},
                                                          indent=2, sort_keys=True) + "\n")

    def _finish(self, result: TrainResult) -> None:
        """Figures and ``summary.json`` for a finished run; a summary in the log either way."""
        if result.finished:
            self._plots()
            write_summary(self.files, result)
        m = result.best_metrics
        log.info("%s %s: %d/%d epochs, best epoch %d with weighted F1 %.4f; files in %s",
                 result.recipe, "finished" if result.finished else "stopped", result.epochs_done,
                 result.epochs, result.best_epoch, m.get("f1", float("nan")), result.out)

    def _plots(self) -> None:
        synthetic = self.splits.synthetic
        try:
            plot_curves(self.state.history, self.files.curves_png, synthetic)
            if self.files.subjects.is_file():
                subjects = json.loads(self.files.subjects.read_text(encoding="utf-8"))["accuracy"]
                plot_subjects(subjects, self.files.subjects_png, synthetic)
        except Exception as exc:  # noqa: BLE001 - a figure must never cost a finished run its summary
            log.warning("could not draw the figures: %s", exc)
        if synthetic:
            log.warning(SYNTHETIC_NOTE)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    # disable=None: off when stderr is not a terminal (logs, CI), on in a console.
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=False,
                disable=None if enabled else True, dynamic_ncols=True)


def _plain(value: Any) -> Any:
    """Turn numpy scalars and arrays into JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value
