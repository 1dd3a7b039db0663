"""White balance from a field's background, and Reinhard stain normalisation of a masked cell.

Torch-free, OpenCV and numpy. The paper's crops were white-balanced and stain-normalised;
a field's cells are brought to the same form here.

Why not torchstain: its numpy backend imports no torch, but its Reinhard normaliser takes
its statistics over the whole image and its Macenko assumes haematoxylin and eosin. A cut
cell is mostly black outside its mask, which would swamp the statistics, and a blood smear
is Romanowsky-stained, not H&E. Reinhard over the mask's pixels, with OpenCV's own L*a*b*
conversion, is these few lines.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from edgeleuk.core.optics import StainReference

#: Share of the brightest pixels taken as the slide's empty background (glass and plasma).
BACKGROUND_SHARE = 0.08
#: Gains outside this range mean the "background" is no background (a field full of cells).
GAIN_RANGE = (0.6, 3.0)


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """The colour of the field's empty background: the median of its brightest pixels (float32 RGB).

    Args:
        rgb: A field (or a reduced copy of one), uint8 ``[H, W, 3]``.
    """
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 60_000)))  # about 60k samples are plenty
    sample = rgb[::step, ::step].reshape(-1, 3)
    lum = sample.astype(np.uint16).sum(axis=1)
    cut = np.quantile(lum, 1.0 - BACKGROUND_SHARE)
    return np.median(sample[lum >= cut], axis=0).astype(np.float32)


def white_balance_gains(background: np.ndarray) -> np.ndarray:
    """Per-channel gains that turn ``background`` white, clipped to :data:`GAIN_RANGE`."""
    return np.clip(255.0 / np.maximum(background, 1.0), *GAIN_RANGE).astype(np.float32)


def apply_gains(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``rgb * gains`` per channel, saturated to uint8 (a lookup table per channel: fast on big fields)."""
    out = np.empty_like(rgb)
    ramp = np.arange(256, dtype=np.float32)
    for c in range(3):
        lut = np.clip(np.rint(ramp * gains[c]), 0, 255).astype(np.uint8)
        out[..., c] = cv2.LUT(rgb[..., c], lut)
    return out


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_stats(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and standard deviation of L*a*b* over the masked pixels, or None for fewer than 16."""
    pix = rgb[mask.astype(bool)]
    if len(pix) < 16:
        return None
    lab = _lab(pix[None, :, :])[0]
    return lab.mean(axis=0), lab.std(axis=0)


def normalise(rgb: np.ndarray, mask: np.ndarray, reference: StainReference) -> np.ndarray:
    """Reinhard-normalise the masked pixels of ``rgb`` to ``reference``; outside the mask stays as it is."""
    stats = lab_stats(rgb, mask)
    if stats is None:
        return rgb
    mean, std = stats
    sel = mask.astype(bool)
    lab = _lab(rgb[sel][None, :, :])[0]
    lab = (lab - mean) / np.maximum(std, 1e-3) * np.asarray(reference.lab_std, np.float32) \
        + np.asarray(reference.lab_mean, np.float32)
    lab[:, 0] = np.clip(lab[:, 0], 0.0, 100.0)
    back = cv2.cvtColor(lab[None, :, :].astype(np.float32), cv2.COLOR_Lab2RGB)[0]
    out = rgb.copy()
    out[sel] = np.clip(np.rint(back * 255.0), 0, 255).astype(np.uint8)
    return out


def reference_from_cells(cells: Iterable[np.ndarray], *, floor: int = 8) -> StainReference:
    """The :class:`StainReference` of C-NMC-form cells (black outside the cell): pooled L*a*b* statistics.

    Args:
        cells: uint8 RGB crops; a pixel is the cell's where any channel is above ``floor``.
        floor: Darkest value still counted as cell (the black-out is 0; JPEG-like noise stays below).

    Raises:
        ValueError: No cell pixels at all.
    """
    total, s1, s2 = 0, np.zeros(3, np.float64), np.zeros(3, np.float64)
    n_cells = 0
    for img in cells:
        pix = img[img.max(axis=2) > floor]
        if len(pix) == 0:
            continue
        lab = _lab(pix[None, :, :])[0].astype(np.float64)
        total += len(lab)
        s1 += lab.sum(axis=0)
        s2 += (lab * lab).sum(axis=0)
        n_cells += 1
    if total == 0:
        raise ValueError("no cell pixels to take a stain reference from")
    mean = s1 / total
    std = np.sqrt(np.maximum(s2 / total - mean * mean, 1e-6))
    return StainReference(lab_mean=tuple(float(v) for v in mean), lab_std=tuple(float(v) for v in std),
                          cells=n_cells)
