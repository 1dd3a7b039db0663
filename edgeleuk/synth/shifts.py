"""SYNTHETIC shifted cells: what a classifier should not be trusted on, labelled by kind.

Each kind departs from the cells :mod:`edgeleuk.synth.cells` draws in one way a real slide or
segmentation can (``edgeleuk synth --shifts N`` writes N of each; tests and ``benchmarks/trust.py``
measure how many of each the quality checks and the OOD score flag):

* ``blank``: nothing, or next to nothing (black, faint noise, a few specks);
* ``blur``: a normal cell out of focus (Gaussian blur, sigma 2.5-5 px);
* ``stain``: a normal cell faded (both densities x0.15-0.3), or with haematoxylin x3-4, or eosin
  x4-6 (HED colour deconvolution, scikit-image): beyond the spread of the drawn cells' own stain
  (their mean haematoxylin density already varies threefold with nucleus share and chromatin);
* ``overexposed``: a normal cell 1.5-2.2 times too bright, clipped at 255;
* ``off_centre``: a normal cell moved 50-90 px from the centre (cut by the crop edge, often);
* ``red_cell``: a red blood cell alone: a pink disk with a paler centre, no nucleus;
* ``debris``: fragments and specks, no whole cell.

Layout written under ``<out>/shifts/`` (docs/data.md)::

    <kind>/<kind>_<i>.bmp   for each kind and i = 1..N
    labels.csv              file,kind (file relative to shifts/)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.meta import INPUT_SIZE
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.synth.cells import BOX, render_cell, sample_looks, subject_stain

SHIFT_KINDS = ("blank", "blur", "stain", "overexposed", "off_centre", "red_cell", "debris")
SHIFTS_DIR = "shifts"
LABELS_CSV = "labels.csv"
_ALL_SHARE = 2 / 3  # as the data set (edgeleuk.synth.dataset.ALL_SHARE); not imported, to keep this light


def draw_normal(rng: np.random.Generator) -> np.ndarray:
    """One cell from the training distribution (a fresh subject's stain; ALL or HEM)."""
    stain = subject_stain(rng)
    looks = sample_looks(rng, bool(rng.random() < _ALL_SHARE), stain)
    return render_cell(rng, looks, stain)


def _blank(rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    style = int(rng.integers(3))
    if style == 1:  # faint sensor noise only
        img[:] = rng.integers(0, 9, img.shape, dtype=np.uint8)
    elif style == 2:  # a few specks on black
        for _ in range(int(rng.integers(1, 6))):
            x, y = (int(v) for v in rng.integers(60, INPUT_SIZE - 60, 2))
            grey = [int(v) for v in rng.integers(80, 200, 3)]
            cv2.circle(img, (x, y), int(rng.integers(1, 4)), grey, thickness=-1)
    return img


def _blur(rng: np.random.Generator) -> np.ndarray:
    sigma = float(rng.uniform(2.5, 5.0))
    return cv2.GaussianBlur(draw_normal(rng), (0, 0), sigmaX=sigma, sigmaY=sigma)


def _stain(rng: np.random.Generator) -> np.ndarray:
    from skimage.color import hed2rgb, rgb2hed

    img = draw_normal(rng)
    hed = rgb2hed(img)
    style = int(rng.integers(3))
    if style == 0:  # faded: both stains weak
        hed[:, :, :2] *= rng.uniform(0.15, 0.3)
    elif style == 1:  # haematoxylin far too strong
        hed[:, :, 0] *= rng.uniform(3.0, 4.0)
    else:  # eosin far too strong (a pink cast)
        hed[:, :, 1] *= rng.uniform(4.0, 6.0)
    out = np.rint(np.clip(hed2rgb(hed), 0.0, 1.0) * 255.0).astype(np.uint8)
    out[img.max(axis=2) == 0] = 0  # the background stays black, as segmentation leaves it
    return out


def _overexposed(rng: np.random.Generator) -> np.ndarray:
    gain = float(rng.uniform(1.5, 2.2))
    return np.clip(draw_normal(rng).astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _off_centre(rng: np.random.Generator) -> np.ndarray:
    dist, ang = rng.uniform(50.0, 90.0), rng.uniform(0.0, 2 * np.pi)
    move = np.float32([[1, 0, dist * np.cos(ang)], [0, 1, dist * np.sin(ang)]])
    return cv2.warpAffine(draw_normal(rng), move, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _red_cell(rng: np.random.Generator) -> np.ndarray:
    """A red blood cell: a smooth pink disk, paler in the middle (biconcave), no nucleus."""
    size = INPUT_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cy, cx = size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8)
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    radius = float(rng.uniform(55.0, 85.0))
    disk = np.clip(radius - r + 0.5, 0.0, 1.0)
    pale = np.exp(-((r / (0.45 * radius)) ** 2)).astype(np.float32)  # the paler centre
    colour = np.array([222.0, 128.0, 140.0], np.float32) + rng.normal(0.0, 6.0, 3).astype(np.float32)
    rgb = colour[None, None, :] * (1.0 + 0.12 * pale[:, :, None])
    rgb = rgb + rng.standard_normal(rgb.shape, dtype=np.float32) * 2.5
    return np.rint(np.clip(rgb * disk[:, :, None], 0, 255)).astype(np.uint8)


def _debris(rng: np.random.Generator) -> np.ndarray:
    """Fragments and specks scattered round the centre: no whole cell."""
    img = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    centre = INPUT_SIZE / 2
    for _ in range(int(rng.integers(6, 25))):
        rad, ang = rng.uniform(0.0, BOX / 2), rng.uniform(0.0, 2 * np.pi)
        x, y = round(centre + rad * np.cos(ang)), round(centre + rad * np.sin(ang))
        colour = [int(v) for v in (rng.integers(90, 200), rng.integers(50, 150), rng.integers(110, 210))]
        axes = (int(rng.integers(2, 16)), int(rng.integers(2, 10)))
        cv2.ellipse(img, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, thickness=-1)
    return img


_DRAW: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "blank": _blank, "blur": _blur, "stain": _stain, "overexposed": _overexposed,
    "off_centre": _off_centre, "red_cell": _red_cell, "debris": _debris,
}
assert tuple(_DRAW) == SHIFT_KINDS


def draw_shifted(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One shifted cell of ``kind`` (uint8 RGB ``[450, 450, 3]``).

    Raises:
        KeyError: ``kind`` is not in :data:`SHIFT_KINDS`.
    """
    return _DRAW[kind](rng)


def shifted_cells(kind: str, n: int, seed: int) -> Iterator[np.ndarray]:
    """``n`` shifted cells of ``kind``, drawn one at a time; the same seed draws the same pixels."""
    index = SHIFT_KINDS.index(kind)
    return (draw_shifted(kind, np.random.default_rng([seed, 5, index, i])) for i in range(n))


def normal_cells(n: int, seed: int) -> Iterator[np.ndarray]:
    """``n`` cells from the training distribution, seeded apart from every shift kind."""
    return (draw_normal(np.random.default_rng([seed, 6, i])) for i in range(n))


def write_shifts(out: Path, n: int, seed: int,
                 write: Callable[[Path, np.ndarray], None]) -> dict[str, int]:
    """Write ``n`` cells of each kind under ``out/shifts/`` with ``labels.csv``; counts per kind.

    Args:
        out: The data set's folder.
        n: Cells per kind (>= 1).
        seed: Random seed.
        write: Writes one RGB image to a path (the data set's BMP writer).
    """
    root = out / SHIFTS_DIR
    buf = io.StringIO()
    rows = csv.writer(buf, lineterminator="\n")
    rows.writerow(["file", "kind"])
    for kind in SHIFT_KINDS:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(shifted_cells(kind, n, seed), start=1):
            name = f"{kind}/{kind}_{i}.bmp"
            write(root / name, img)
            rows.writerow([name, kind])
    atomic_write_text(root / LABELS_CSV, buf.getvalue())
    return {kind: n for kind in SHIFT_KINDS}
