"""Measure the input quality of one decoded cell image (torch-free: numpy, OpenCV, scikit-image).

C-NMC cells are segmented: one cell on a black background, centred in a 450 x 450 image whose
centre crop (300 x 300) the network sees. Each measure below is a number a range in
:class:`edgeleuk.core.trust.QualityRanges` accepts or not (:func:`edgeleuk.quality.checks.assess`).
The cell is the set of pixels whose brightest channel exceeds :data:`FOREGROUND_LEVEL`.

Cost: a few OpenCV passes over the image and a colour deconvolution of every
:data:`HED_STRIDE`-th cell pixel in each direction; well under 10 ms per cell
(``benchmarks/trust.py`` measures it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Preprocess

#: A pixel whose brightest channel exceeds this is cell; C-NMC backgrounds are black (0).
FOREGROUND_LEVEL = 10
#: Erosion (pixels, square side) that keeps the Laplacian of the cell's outline out of ``focus``:
#: the outline against black is sharp even in a blurred image.
INTERIOR_ERODE = 9
#: Colour deconvolution reads every HED_STRIDE-th pixel of each row and column (1/9 of them):
#: the mean density changes by far less than the ranges' margins, at a ninth of the cost.
HED_STRIDE = 3
_DEFAULT_PRE = Preprocess()


@dataclass(frozen=True)
class QualityMeasures:
    """The quality measures of one cell image (names as in :class:`~edgeleuk.core.trust.QualityRanges`).

    ``contrast`` (standard deviation of the grey crop) only decides ``blank``; it has no range.
    """

    area_frac: float
    offset_frac: float
    edge_frac: float
    focus: float
    brightness: float
    clipped_frac: float
    od_hematoxylin: float
    od_eosin: float
    background_frac: float
    contrast: float

    def to_dict(self) -> dict[str, float]:
        """The measures by name."""
        return dataclasses.asdict(self)


#: The stain measures are this percentile of the cell pixels' densities: the densest tenth (the
#: nucleus, for haematoxylin) depends on the stain, far less on how much of the cell the nucleus fills.
STAIN_PERCENTILE = 90


def _stain_densities(pixels: np.ndarray) -> tuple[float, float]:
    """Haematoxylin and eosin densities of ``pixels`` (uint8 ``[N, 3]`` RGB), via skimage's rgb2hed."""
    if len(pixels) == 0:
        return 0.0, 0.0
    from skimage.color import rgb2hed  # here, not at the top: it pulls SciPy in (once per process)

    hed = rgb2hed(pixels[None, :, :])[0]  # a 1 x N image: skimage wants an image-shaped array
    h, e = np.percentile(hed[:, :2], STAIN_PERCENTILE, axis=0)
    return float(h), float(e)


def _check_image(image: Any, pre: Preprocess) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise UsageError(f"quality measures need a uint8 RGB image [H, W, 3], got {got}")
    if image.shape[0] < pre.crop or image.shape[1] < pre.crop:
        raise UsageError(f"image {image.shape[1]}x{image.shape[0]} is smaller than the {pre.crop} px crop")


def measure(image: np.ndarray, pre: Preprocess | None = None) -> QualityMeasures:
    """The quality measures of one decoded cell (uint8 RGB, normally ``[450, 450, 3]``).

    Args:
        image: The decoded cell as the runtime feeds it to the model.
        pre: The model's preprocessing (its ``crop`` is the square the network sees);
            the paper's when None.

    Raises:
        UsageError: Not a uint8 RGB image, or smaller than the crop.
    """
    pre = pre or _DEFAULT_PRE
    _check_image(image, pre)
    h, w = image.shape[:2]
    crop = pre.crop
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    r, g, b = cv2.split(image)
    top = cv2.max(cv2.max(r, g), b)  # brightest channel
    _, fg = cv2.threshold(top, FOREGROUND_LEVEL, 255, cv2.THRESH_BINARY)
    fg_crop = fg[y0:y0 + crop, x0:x0 + crop]
    n_all, n_crop = cv2.countNonZero(fg), cv2.countNonZero(fg_crop)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey_crop = grey[y0:y0 + crop, x0:x0 + crop]
    contrast = float(cv2.meanStdDev(grey_crop)[1][0, 0])
    outside = h * w - crop * crop
    background = (n_all - n_crop) / outside if outside else 0.0
    if n_all == 0:
        return QualityMeasures(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, background, contrast)

    mom = cv2.moments(fg, binaryImage=True)
    cy, cx = mom["m01"] / mom["m00"], mom["m10"] / mom["m00"]
    offset = float(np.hypot(cy - h / 2, cx - w / 2)) / (crop / 2)
    border = (cv2.countNonZero(fg_crop[0]) + cv2.countNonZero(fg_crop[-1])
              + cv2.countNonZero(fg_crop[1:-1, 0]) + cv2.countNonZero(fg_crop[1:-1, -1]))
    edge = border / (4 * crop - 4)

    brightness = float(cv2.mean(grey, mask=fg)[0])
    _, clipped = cv2.threshold(top, 254, 255, cv2.THRESH_BINARY)
    clipped_frac = cv2.countNonZero(cv2.bitwise_and(clipped, fg)) / n_all

    interior = cv2.erode(fg_crop, np.ones((INTERIOR_ERODE, INTERIOR_ERODE), np.uint8))
    focus = 0.0
    if cv2.countNonZero(interior):
        lap = cv2.Laplacian(grey_crop, cv2.CV_32F)
        focus = float(cv2.meanStdDev(lap, mask=interior)[1][0, 0]) ** 2

    sub = image[y0:y0 + crop:HED_STRIDE, x0:x0 + crop:HED_STRIDE]
    od_h, od_e = _stain_densities(sub[fg_crop[::HED_STRIDE, ::HED_STRIDE] > 0])
    return QualityMeasures(
        area_frac=n_all / (crop * crop), offset_frac=offset, edge_frac=edge, focus=focus,
        brightness=brightness, clipped_frac=clipped_frac, od_hematoxylin=od_h, od_eosin=od_e,
        background_frac=background, contrast=contrast,
    )
