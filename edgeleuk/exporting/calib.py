"""Images for the parity gate and for INT8 calibration: real data, or a SYNTHETIC set.

With ``--calib DATA`` any layout :func:`edgeleuk.io.data.discover` understands is
used: gate cells come from the labelled preliminary test split if present, else
the training split, else the plain images; INT8 calibration cells come from the
training split first. Without it a SYNTHETIC C-NMC-layout set is drawn into a
temporary folder (``edgeleuk.synth.dataset``) and read back through the same path, so
the gate still runs, but its F1 says nothing about real cells.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeleuk.core.errors import DataError
from edgeleuk.io.data import DataIndex, discover, spread
from edgeleuk.io.imageio import decode_image
from edgeleuk.synth.dataset import assign_subjects, make_synthetic

log = logging.getLogger(__name__)

GATE_SPLITS = ("prelim", "train", "images")
CALIB_SPLITS = ("train", "images", "prelim")
SYNTH_SUBJECTS, SYNTH_SEED = 24, 0


@dataclass(frozen=True)
class ImageSet:
    """Decoded cells.

    Attributes:
        images: uint8 [N, size, size, 3] RGB.
        labels: 1 = ALL, 0 = HEM per image, or None when any label is unknown.
        source: Where they came from, for the report (says SYNTHETIC when they are).
        split: The data split they were taken from.
    """

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    split: str

    def __len__(self) -> int:
        return len(self.images)


def _first_split(index: DataIndex, order: tuple[str, ...]) -> str:
    for name in order:
        if index.has(name):
            return name
    raise DataError(f"no images found under {index.root}; give --calib a C-NMC data root or a folder of images")


def load_set(index: DataIndex, order: tuple[str, ...], n: int, size: int) -> ImageSet:
    """Decode ``n`` cells (fewer if the split is smaller) from the first split of ``order`` present.

    Unreadable files are skipped with a warning; no labels are invented.
    """
    split = _first_split(index, order)
    records = spread(index.split(split), n)
    images, labels = [], []
    for rec in records:
        decoded = decode_image(rec.path, size=size)
        if not decoded.ok:
            log.warning("skipping %s: %s", rec.path, decoded.error)
            continue
        images.append(decoded.image)
        labels.append(rec.label)
    if not images:
        raise DataError(f"none of the {len(records)} {split!r} images under {index.root} could be decoded")
    known = None if any(lbl is None for lbl in labels) else np.asarray(labels, dtype=np.int64)
    kind = "SYNTHETIC " if index.synthetic else ""
    source = f"{kind}{index.layout} layout, {split} split, {len(images)} of {len(index.split(split))} cells"
    return ImageSet(np.stack(images), known, source, split)


def draw_synthetic_root(tmp: Path, gate_n: int, calib_n: int) -> Path:
    """Draw a SYNTHETIC set large enough for ``gate_n`` prelim and ``calib_n`` training cells."""
    subjects = assign_subjects(SYNTH_SUBJECTS, SYNTH_SEED)
    n_prelim = sum(s.split == "prelim" for s in subjects)
    n_train = sum(s.split == "train" for s in subjects)
    per_subject = max(math.ceil(gate_n / n_prelim), math.ceil(calib_n / n_train), 1)
    root = tmp / "synthetic"
    log.info("no --calib data: drawing %d SYNTHETIC cells for the gate", SYNTH_SUBJECTS * per_subject)
    make_synthetic(root, subjects=SYNTH_SUBJECTS, cells_per_subject=per_subject, seed=SYNTH_SEED)
    return root


def gate_and_calib_sets(calib: Path | None, gate_n: int, calib_n: int,
                        size: int) -> tuple[ImageSet, ImageSet | None]:
    """The gate set, and the INT8 calibration set when ``calib_n > 0``.

    Raises:
        DataError: No usable images, or fewer calibration images than ``calib_n``.
    """
    with tempfile.TemporaryDirectory(prefix="edgeleuk-calib-") as tmp:
        root = Path(calib) if calib is not None else draw_synthetic_root(Path(tmp), gate_n, calib_n)
        if not root.exists():
            raise DataError(f"--calib folder not found: {root}")
        index = discover(root)
        gate = load_set(index, GATE_SPLITS, gate_n, size)
        calib_set = load_set(index, CALIB_SPLITS, calib_n, size) if calib_n > 0 else None
    if calib_set is not None and len(calib_set) < calib_n:
        raise DataError(
            f"INT8 calibration needs {calib_n} images but only {len(calib_set)} were usable ({calib_set.source}); "
            "pass a larger --calib data set (its training split is used)"
        )
    if calib_set is not None and calib_set.split == gate.split:
        log.warning("gate and calibration images come from the same split; the INT8 gate is then optimistic")
    return gate, calib_set
