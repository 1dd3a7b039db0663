"""Heatmap overlays: where the network found its evidence, next to the cell it looked at.

Each PNG shows the cell's centre crop (what the network sees) on the left and the same crop
under the class activation map on the right (:attr:`edgeleuk.runtime.classifier.Prediction.cam`:
the last linear layer's weights at every position of the last feature map, turned upright and
averaged over the rotations). Red is evidence for ALL, blue for HEM, white none; the colour
scale is symmetric and set by the strongest value of that cell (printed under the map), so
colours compare regions within one cell, not across cells. For the eye only, the map is
smoothed (a Gaussian of :data:`SMOOTH_FRACTION` of the crop) before it is coloured: the exact map
is the upsampled 10x10 grid of each view, whose 45-degree copies leave stair steps. A strip
below says the call.

:func:`write_heatmaps` draws them for the cells a technologist should look at: ALL calls,
flagged cells (quality or OOD) and calls near the threshold. OpenCV only; torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.contract import crop_offset
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Preprocess
from edgeleuk.io.atomic import atomic_path
from edgeleuk.io.imageio import decode_image
from edgeleuk.runtime.classifier import Prediction

log = logging.getLogger(__name__)

#: How close to the threshold (in probability) a call counts as "near" it and gets a heatmap.
NEAR_THRESHOLD = 0.1
#: Share of the cell kept under the map in the right panel.
CELL_WEIGHT = 0.45
_STRIP = 44  # pixels of the caption strip below the panels
_GAP = 8  # pixels between the panels
SUFFIX = ".heatmap.png"
#: Gaussian sigma of the display smoothing, as a share of the crop side (300 px -> 7.5 px).
SMOOTH_FRACTION = 0.025


def _diverging_lut() -> np.ndarray:
    """256 RGB entries from blue (-1) through white (0) to red (+1)."""
    t = np.linspace(-1.0, 1.0, 256)
    red = np.where(t < 0, 1.0 + t, 1.0)
    blue = np.where(t > 0, 1.0 - t, 1.0)
    green = 1.0 - np.abs(t)
    return (np.stack([red, green, blue], axis=1) * 255.0).round().astype(np.uint8)


_LUT = _diverging_lut()


def colour_map(cam: np.ndarray) -> tuple[np.ndarray, float]:
    """RGB uint8 picture of ``cam`` on the diverging scale, and the value that maps to full colour."""
    cam = np.asarray(cam, np.float64)
    if cam.ndim != 2 or not np.isfinite(cam).all():
        raise UsageError(f"a heatmap needs a finite 2-D map, got {cam.dtype} {list(cam.shape)}")
    scale = float(np.abs(cam).max()) or 1.0
    index = np.clip(np.round((cam / scale + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return _LUT[index], scale


def _crop(image: np.ndarray, crop: int) -> np.ndarray:
    size = image.shape[0]
    off = crop_offset(size, crop)
    return image[off : off + crop, off : off + crop]


def overlay_png(image: np.ndarray, cam: np.ndarray, pre: Preprocess | None = None, caption: str = "") -> bytes:
    """The cell and its map side by side, as PNG bytes.

    Args:
        image: The decoded cell, uint8 RGB ``[S, S, 3]`` (the model's input).
        cam: Its class activation map ``[crop, crop]`` (upright, over the centre crop).
        pre: The model's preprocessing (checks the crop); None: the map's own side.
        caption: A line under the panels (the call, the flags).

    Raises:
        UsageError: Shapes that do not fit together, a non-finite map.
    """
    image = np.asarray(image)
    crop = np.asarray(cam).shape[0] if pre is None else pre.crop
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise UsageError(f"a heatmap needs a uint8 RGB square cell, got {image.dtype} {list(image.shape)}")
    if np.asarray(cam).shape != (crop, crop) or crop > image.shape[0]:
        raise UsageError(f"map {list(np.asarray(cam).shape)} does not fit a {crop} px crop of a "
                         f"{image.shape[0]} px cell")
    cell = _crop(image, crop)
    cam = np.asarray(cam, np.float32)
    if not np.isfinite(cam).all():
        raise UsageError("a heatmap needs a finite map")
    colours, scale = colour_map(cv2.GaussianBlur(cam, (0, 0), SMOOTH_FRACTION * crop))
    blend = (CELL_WEIGHT * cell + (1.0 - CELL_WEIGHT) * colours).round().astype(np.uint8)
    canvas = np.full((crop + _STRIP, 2 * crop + _GAP, 3), 255, np.uint8)
    canvas[:crop, :crop] = cell
    canvas[:crop, crop + _GAP :] = blend
    bgr = np.ascontiguousarray(canvas[:, :, ::-1])
    font, small = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    legend = f"red: evidence for ALL, blue: for HEM (full colour = {scale:.3g})"
    cv2.putText(bgr, legend, (4, crop + 16), font, small, (0, 0, 0), 1, cv2.LINE_AA)
    if caption:
        cv2.putText(bgr, caption[:110], (4, crop + 36), font, small, (0, 0, 0), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", bgr)
    if not ok:  # OpenCV returns False only on an encoder failure, never for a valid array
        raise UsageError("OpenCV could not encode the heatmap as PNG")
    return png.tobytes()


@dataclass(frozen=True)
class Heatmap:
    """One overlay written: where, for which cell, and why it was chosen."""

    path: Path
    source: str | None
    why: tuple[str, ...]


def reasons_to_show(prediction: Prediction, threshold: float, near: float = NEAR_THRESHOLD) -> tuple[str, ...]:
    """Why a cell gets a heatmap: ``all`` (called ALL), ``flagged``, ``near`` the threshold; empty: none."""
    if not prediction.ok or prediction.prob_all is None:
        return ()
    why = []
    if prediction.prob_all >= threshold:
        why.append("all")
    if prediction.flagged:
        why.append("flagged")
    if abs(prediction.prob_all - threshold) <= near:
        why.append("near")
    return tuple(why)


def caption_of(prediction: Prediction, threshold: float) -> str:
    """The strip under a heatmap: file, probability, call, flags."""
    name = Path(prediction.path).name if prediction.path else "array"
    flags = ",".join(prediction.qc) if prediction.qc else "qc ok"
    if prediction.ood_score is not None:
        flags += f"; ood {prediction.ood_score:.3g}{' FLAG' if prediction.ood_flag else ''}"
    return f"{name}: p(ALL)={prediction.prob_all:.3f} at {threshold:.3f} -> {prediction.label}; {flags}"


def _name(prediction: Prediction, index: int, taken: set[str]) -> str:
    stem = Path(prediction.path).stem if prediction.path else f"cell{index:05d}"
    name, k = stem + SUFFIX, 1
    while name in taken:  # two folders may hold files of one name
        name, k = f"{stem}-{k}{SUFFIX}", k + 1
    taken.add(name)
    return name


def _decode_again(prediction: Prediction, pre: Preprocess | None) -> np.ndarray | None:
    """The cell of ``prediction`` decoded again from its file, as ``predict`` decoded it (None: cannot)."""
    if not prediction.path:
        log.warning("no heatmap for an array call given without its image")
        return None
    decoded = decode_image(Path(prediction.path), (pre or Preprocess()).input_size)
    if not decoded.ok:
        log.warning("no heatmap for %s: the image cannot be read again (%s)", prediction.path, decoded.error)
        return None
    return decoded.image


def write_heatmaps(folder: str | Path, predictions: Sequence[Prediction], images: Sequence[np.ndarray | None] | None,
                   threshold: float, *, pre: Preprocess | None = None, near: float = NEAR_THRESHOLD) -> list[Heatmap]:
    """Write an overlay PNG for every ALL call, flagged cell and call near the threshold.

    Args:
        folder: Where the PNGs go (made if missing); each is ``<file stem>.heatmap.png``.
        predictions: The calls, from a classifier loaded with ``heatmaps=True`` (a call without a
            map is skipped and counted in the log).
        images: The decoded cells in the same order, or None (or a None entry): decoded again
            from the prediction's path, only for the cells chosen.
        threshold: The decision threshold the calls were made at.
        pre: The model's preprocessing (crop check).
        near: Calls within this distance of the threshold (probability) are shown.

    Returns:
        One :class:`Heatmap` per PNG written, in the order of ``predictions``.
    """
    if images is not None and len(images) != len(predictions):
        raise UsageError(f"{len(images)} images for {len(predictions)} predictions")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written, taken, no_map = [], set(), 0
    for i, prediction in enumerate(predictions):
        why = reasons_to_show(prediction, threshold, near)
        if not why:
            continue
        if prediction.cam is None:
            no_map += 1
            continue
        image = None if images is None else images[i]
        if image is None:
            image = _decode_again(prediction, pre)
            if image is None:
                continue
        png = overlay_png(image, prediction.cam, pre, caption_of(prediction, threshold))
        dest = out / _name(prediction, i, taken)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(png)
        written.append(Heatmap(dest, prediction.path, why))
    if no_map:
        log.warning("%d chosen cell(s) have no map (load the classifier with heatmaps=True on a model with "
                    "a 'cam' output)", no_map)
    return written
