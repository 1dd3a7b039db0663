"""The export's image sets: parity-gate cells and INT8 quantization images, from real data or SYNTHETIC.

NNCF gathers INT8 quantization statistics on "calibration" images; here they are
the ``quant`` set, unrelated to ``edgeleuk calibrate`` (which sets a model's
decision threshold). With ``--data DATA`` any layout
:func:`edgeleuk.io.data.discover` understands is used: gate cells come from the
labelled preliminary test split if present, else the training split, else the
plain images; quantization images come from the training split first. Without
it a SYNTHETIC C-NMC-layout set is drawn into a temporary folder
(``edgeleuk.synth.dataset``) and read back through the same path, so the gate
still runs, but its F1 says nothing about real cells.
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
QUANT_SPLITS = ("train", "images", "prelim")
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
    raise DataError(f"no images found under {index.root}; give --data a C-NMC data root or a folder of images")


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


def draw_synthetic_root(tmp: Path, gate_n: int, quant_n: int) -> Path:
    """Draw a SYNTHETIC set large enough for ``gate_n`` prelim and ``quant_n`` training cells."""
    subjects = assign_subjects(SYNTH_SUBJECTS, SYNTH_SEED)
    n_prelim = sum(s.split == "prelim" for s in subjects)
    n_train = sum(s.split == "train" for s in subjects)
    per_subject = max(math.ceil(gate_n / n_prelim), math.ceil(quant_n / n_train), 1)
    root = tmp / "synthetic"
    log.info("no --data: drawing %d SYNTHETIC cells for the gate", SYNTH_SUBJECTS * per_subject)
    make_synthetic(root, subjects=SYNTH_SUBJECTS, cells_per_subject=per_subject, seed=SYNTH_SEED)
    return root


def gate_and_quant_sets(data: Path | None, gate_n: int, quant_n: int,
                        size: int) -> tuple[ImageSet, ImageSet | None]:
    """The gate set, and the INT8 quantization set when ``quant_n > 0``.

    Args:
        data: Data root (``--data``); None draws a SYNTHETIC set.
        gate_n: Gate cells wanted (fewer if the split is smaller).
        quant_n: INT8 quantization images needed (the profile's ``calib_size``); 0 for none.
        size: Side the images are decoded at.

    Raises:
        DataError: No usable images, or fewer quantization images than ``quant_n``.
    """
    with tempfile.TemporaryDirectory(prefix="edgeleuk-imagesets-") as tmp:
        root = Path(data) if data is not None else draw_synthetic_root(Path(tmp), gate_n, quant_n)
        if not root.exists():
            raise DataError(f"--data folder not found: {root}")
        index = discover(root)
        gate = load_set(index, GATE_SPLITS, gate_n, size)
        quant = load_set(index, QUANT_SPLITS, quant_n, size) if quant_n > 0 else None
    if quant is not None and len(quant) < quant_n:
        raise DataError(
            f"INT8 calibration needs {quant_n} images but only {len(quant)} were usable ({quant.source}); "
            "pass a larger --data set (its training split is used)"
        )
    if quant is not None and quant.split == gate.split:
        log.warning("gate and INT8 calibration images come from the same split; the INT8 gate is then optimistic")
    return gate, quant
