"""Small JPEG thumbnails as ``data:`` URIs, so the HTML report needs no other file."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2

from edgeleuk.imageio import decode_image
from edgeleuk.meta import Preprocess

THUMB_SIZE = 112
DEFAULT_CROP = Preprocess().crop  # the paper's crop; the CSV does not say which model wrote it


def thumbnail_uri(
    path: str | Path, size: int = THUMB_SIZE, crop: int | None = DEFAULT_CROP, quality: int = 85
) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of an image file, or None if it cannot be read.

    The image goes through the same decoder as prediction and is cut to the
    centre crop the network sees, so the thumbnail shows what the model was given.
    """
    decoded = decode_image(Path(path))
    if not decoded.ok:
        return None
    img = decoded.image
    if crop is not None and crop < min(img.shape[:2]):
        top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
        img = img[top : top + crop, left : left + crop]
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    small = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
