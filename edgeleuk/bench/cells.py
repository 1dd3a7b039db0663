"""The cells a benchmark runs on: from a data folder, or drawn synthetic cells.

With ``--data`` any layout :func:`edgeleuk.io.data.discover` understands is used;
the labelled preliminary-test split gives F1, sensitivity and specificity.
Without it, SYNTHETIC cells are drawn in memory (with their labels) by the same
renderer as ``edgeleuk synth``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeleuk.core.errors import DataError
from edgeleuk.io.data import discover, spread
from edgeleuk.io.imageio import decode_image
from edgeleuk.synth.cells import render_cell, sample_looks, subject_stain

# Split preference: labelled test cells first, then labelled training cells, then unlabelled ones.
SPLIT_ORDER = ("prelim", "train", "final", "images")


@dataclass(frozen=True)
class Cells:
    """A batch of cells and where it came from.

    Attributes:
        images: uint8 [N, 450, 450, 3] RGB.
        labels: 1 = ALL, 0 = HEM per cell; None when unknown.
        source: One line saying where the cells came from.
        synthetic: Drawn by edgeleuk's synthesiser (figures must say SYNTHETIC).
        skipped: Files that could not be decoded, with the reason.
    """

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    synthetic: bool
    skipped: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        labels = None if self.labels is None else {
            "all": int((self.labels == 1).sum()), "hem": int((self.labels == 0).sum())}
        return {"n": len(self.images), "labels": labels, "source": self.source, "synthetic": self.synthetic,
                "skipped": list(self.skipped)}


def load_folder(root: Path, n: int) -> Cells:
    """Up to ``n`` cells from a data folder, from the first non-empty split of :data:`SPLIT_ORDER`.

    Raises:
        DataError: No images, or none could be decoded.
    """
    index = discover(root)
    split = next((name for name in SPLIT_ORDER if index.has(name)), None)
    if split is None:
        raise DataError(f"no images found in {root} (layout {index.layout!r}); point --data at a C-NMC folder "
                        "or a folder of cell images")
    records = index.split(split)
    picked = spread(records, n)
    images, labels, skipped = [], [], []
    for rec in picked:
        dec = decode_image(rec.path)
        if not dec.ok:
            skipped.append(f"{rec.path}: {dec.error}")
            continue
        images.append(dec.image)
        labels.append(rec.label)
    if not images:
        raise DataError(f"none of the {len(picked)} images picked from {root} could be decoded: {skipped[:3]}")
    known = all(lab is not None for lab in labels)
    return Cells(
        images=np.stack(images), labels=np.asarray(labels, dtype=np.int64) if known else None,
        source=f"{root} ({index.layout} layout, split '{split}', {len(images)} of {len(records)} cells"
        f"{', labelled' if known else ', unlabelled'})",
        synthetic=index.synthetic, skipped=tuple(skipped),
    )


def draw_synthetic(n: int, seed: int = 0) -> Cells:
    """``n`` SYNTHETIC cells with labels (about 2:1 ALL:HEM), drawn in memory."""
    rng = np.random.default_rng([seed, 99])
    stains = [subject_stain(rng) for _ in range(4)]  # a few "subjects" for stain variety
    labels = (np.arange(n) % 3 != 2).astype(np.int64)
    images = np.stack([
        render_cell(rng, sample_looks(rng, bool(lab), stains[i % len(stains)]), stains[i % len(stains)])
        for i, lab in enumerate(labels)
    ])
    return Cells(images=images, labels=labels, synthetic=True,
                 source=f"{n} SYNTHETIC cells drawn in memory by edgeleuk's synthesiser (seed {seed})")


def load_cells(data: Path | None, n: int, seed: int = 0) -> Cells:
    """Cells from ``data`` (see :func:`load_folder`), or synthetic ones without it."""
    if data is None:
        return draw_synthetic(n, seed)
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"--data {data}: no such folder")
    return load_folder(data, n)
