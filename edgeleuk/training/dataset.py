"""Training and validation cells as torch datasets, plus the checks and counts around them.

Every sample is decoded with :func:`edgeleuk.io.imageio.decode_image`. A file that
cannot be read does not stop an epoch: the sample comes back with its
``error`` set and an all-zero image, and the loop drops it from the batch and
lists it in ``skipped.txt``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeleuk.core.errors import DataError
from edgeleuk.core.meta import Preprocess
from edgeleuk.io.data import Record, discover, fingerprint
from edgeleuk.io.imageio import decode_image
from edgeleuk.training.augment import TrainTransform, rotation_stack
from edgeleuk.training.recipe import Recipe

CLASS_NAMES = {0: "hem", 1: "all"}


@dataclass(frozen=True)
class Splits:
    """The cells a run trains and validates on.

    Attributes:
        train: Training cells (the recipe's folds, after any cap).
        val: Labelled validation cells (after any cap).
        synthetic: Whether the data root carries ``edgeleuk synth``'s marker.
        fingerprint: Hash of the training files' relative paths and labels.
    """

    train: list[Record]
    val: list[Record]
    synthetic: bool
    fingerprint: str


def class_counts(records: Sequence[Record]) -> dict[str, int]:
    """Number of cells per class name, both classes always present."""
    counts = Counter(r.label for r in records)
    return {name: counts.get(label, 0) for label, name in CLASS_NAMES.items()}


def split_counts(records: Sequence[Record]) -> dict[str, dict[str, int]]:
    """Cells and distinct known subjects per class name: what a model card states of its data."""
    subjects = {name: {r.subject for r in records if r.label == label and r.subject is not None}
                for label, name in CLASS_NAMES.items()}
    return {"cells": class_counts(records), "subjects": {name: len(s) for name, s in subjects.items()}}


def pos_weight(records: Sequence[Record]) -> float:
    """The paper's BCE weight of the positive class: ``n_hem / n_all`` on the training cells."""
    counts = class_counts(records)
    return counts["hem"] / counts["all"]


def stratified_cap(records: Sequence[Record], cap: int | None) -> list[Record]:
    """At most ``cap`` cells, keeping both classes in proportion (at least one each).

    The subset is fixed (seed 0), not tied to the run's seed, so that every run
    of a capped sweep sees the same cells.
    """
    if cap is None or cap >= len(records):
        return list(records)
    rng = np.random.default_rng(0)
    by_class = {label: [r for r in records if r.label == label] for label in CLASS_NAMES}
    out: list[Record] = []
    for group in by_class.values():
        share = max(1, round(cap * len(group) / len(records))) if group else 0
        picked = rng.permutation(len(group))[:share]
        out.extend(group[i] for i in sorted(picked))
    return sorted(out, key=lambda r: str(r.path))


def _check_split(records: Sequence[Record], what: str, root: Path) -> None:
    if not records:
        raise DataError(
            f"no {what} images found under {root}; expected the C-NMC layout "
            "(training_data/fold_0..2/{all,hem}/*.bmp, prelim/ + prelim_labels.csv); "
            "`edgeleuk synth DIR` writes an example"
        )
    unlabelled = [r.path.name for r in records if r.label not in CLASS_NAMES]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} {what} images have no label, e.g. {unlabelled[:3]}")
    empty = [name for name, n in class_counts(records).items() if n == 0]
    if empty:
        raise DataError(
            f"the {what} set under {root} has no '{empty[0]}' images; training needs both classes "
            "(all = leukaemic blast, hem = healthy)"
        )


def select_records(root: str | Path, recipe: Recipe) -> Splits:
    """Find the recipe's training folds and validation split under ``root``.

    Raises:
        DataError: Missing or empty split, unlabelled cells, or a class without images.
    """
    root = Path(root)
    index = discover(root)
    train = [r for r in index.split("train") if r.fold in recipe.train_folds]
    val = list(index.split(recipe.val_split))
    _check_split(train, f"training (folds {list(recipe.train_folds)})", root)
    _check_split(val, f"validation ({recipe.val_split})", root)
    train = stratified_cap(train, recipe.max_train_images)
    val = stratified_cap(val, recipe.max_val_images)
    return Splits(train=train, val=val, synthetic=index.synthetic, fingerprint=fingerprint(train, root))


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one cell in one epoch: independent of workers, order and resume."""
    return np.random.default_rng([seed, epoch, index])


class CellDataset(Dataset):
    """Cells as dicts ``{"x", "label", "index", "error", "adjustments"}``.

    Args:
        records: Labelled cells.
        preprocess: Crop, scale and TTA rotations.
        transform: Training augmentation; None for validation.
        seed: Run seed, mixed into each cell's augmentation generator.
        raw: Validation only: return the uint8 ``[H, W, 3]`` pixels (for the
            batched gather TTA) instead of the PIL rotation stack.
    """

    def __init__(self, records: Sequence[Record], preprocess: Preprocess,
                 transform: TrainTransform | None = None, seed: int = 0, raw: bool = False) -> None:
        self.records = list(records)
        self.preprocess = preprocess
        self.transform = transform
        self.seed = seed
        self.raw = raw
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (only matters for training)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _empty(self) -> torch.Tensor:
        size, crop = self.preprocess.input_size, self.preprocess.crop
        if self.transform is not None:
            return torch.zeros(3, crop, crop)
        if self.raw:
            return torch.zeros(size, size, 3, dtype=torch.uint8)
        return torch.zeros(self.preprocess.rotations, 3, crop, crop)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        decoded = decode_image(record.path, size=self.preprocess.input_size)
        item = {"label": int(record.label), "index": index, "error": decoded.error or "",
                "adjustments": ",".join(decoded.adjustments)}
        if not decoded.ok:
            item["x"] = self._empty()
        elif self.transform is not None:
            item["x"] = self.transform(decoded.image, sample_rng(self.seed, self.epoch, index))
        elif self.raw:
            item["x"] = torch.from_numpy(decoded.image)
        else:
            item["x"] = rotation_stack(decoded.image, self.preprocess)
        return item
