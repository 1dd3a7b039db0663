"""Decode one cell image into the 450x450 RGB uint8 array every model expects.

Torch-free. :func:`decode_image` never raises for a bad file: it returns a
:class:`Decoded` whose ``error`` says what is wrong, so a batch job can report
the file and carry on (no image is silently lost).

Adjustments are made only where the meaning of the pixels is kept:

* grayscale is replicated to three channels (``converted:gray``);
* an alpha channel is dropped (``dropped:alpha``);
* 16-bit samples are scaled to 8 bits by keeping the high byte, ``v >> 8``
  (``scaled:16bit``; 65535 -> 255, differs from ``round(v / 257)`` by at most 1);
* other sizes are centre-padded with black or centre-cropped, per axis, to the
  input size (``padded:WxH->450x450``, ``cropped:WxH->450x450``). Images are
  never resized: the size of a cell is diagnostic.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeleuk.meta import INPUT_SIZE

#: File extensions (lower case, with dot) that are treated as cell images.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def supported_extensions() -> tuple[str, ...]:
    """The image file extensions edgeleuk reads, lower case with the dot."""
    return SUPPORTED_EXTENSIONS


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """Whether a file name has a supported image extension (case-insensitive)."""
    return Path(name).suffix.lower() in SUPPORTED_EXTENSIONS


@dataclass(frozen=True, eq=False)
class Decoded:
    """The result of decoding one file.

    Attributes:
        image: RGB pixels, uint8 ``[size, size, 3]``; None when decoding failed.
        adjustments: What was changed to meet the input contract, e.g.
            ``("converted:gray", "padded:300x300->450x450")``; empty if nothing.
        error: Why the file could not be used; None on success.
    """

    image: np.ndarray | None
    adjustments: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None


def _fail(message: str) -> Decoded:
    return Decoded(image=None, adjustments=(), error=message)


def _read_bytes(path: Path) -> bytes | Decoded:
    """Read the whole file, turning every OS problem into a failed :class:`Decoded`."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return _fail("is a directory, not an image file")
        if not stat.S_ISREG(mode):  # a pipe would block the reader forever
            return _fail("not a regular file (device, pipe or socket)")
        data = path.read_bytes()
    except FileNotFoundError:
        hint = " (broken symbolic link)" if path.is_symlink() else ""
        return _fail(f"file not found{hint}")
    except PermissionError:
        return _fail("cannot read file: permission denied (check the file's permissions)")
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        return _fail(f"cannot read file: {reason}")
    if not data:
        return _fail("empty file (0 bytes)")
    return data


def _imdecode(data: bytes) -> np.ndarray | None:
    """OpenCV decode with its error log silenced (a bad file is reported by us, once)."""
    import cv2  # lazy: keeps ``import edgeleuk.data`` light

    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        # imdecode from bytes == imread(IMREAD_UNCHANGED) but also works for
        # non-ASCII paths on Windows, where cv2.imread fails.
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    finally:
        log.setLogLevel(level)


def _to_uint8(img: np.ndarray, adjustments: list[str]) -> np.ndarray | str:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        adjustments.append("scaled:16bit")
        return (img >> 8).astype(np.uint8)
    return f"unsupported pixel type {img.dtype} (expected 8- or 16-bit)"


def _to_rgb(img: np.ndarray, adjustments: list[str]) -> np.ndarray | str:
    """OpenCV's gray/BGR/BGRA layouts to RGB."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        adjustments.append("converted:gray")
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        return f"unsupported image layout {img.shape} (expected gray, RGB or RGBA)"
    if img.shape[2] == 4:
        adjustments.append("dropped:alpha")
    return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB


def _fit_axis(n: int, size: int) -> tuple[slice, slice]:
    """Source and destination slices that centre ``n`` pixels in ``size``."""
    if n >= size:
        start = (n - size) // 2
        return slice(start, start + size), slice(0, size)
    start = (size - n) // 2
    return slice(0, n), slice(start, start + n)


def fit_to_size(img: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[str, ...]]:
    """Centre-pad with black and/or centre-crop an RGB image to ``size x size``, never resizing.

    Returns:
        The fitted image and the adjustments made (empty if it already fitted).
    """
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img, ()
    src_y, dst_y = _fit_axis(h, size)
    src_x, dst_x = _fit_axis(w, size)
    out = np.zeros((size, size, img.shape[2]), dtype=img.dtype)
    out[dst_y, dst_x] = img[src_y, src_x]
    change = f"{w}x{h}->{size}x{size}"
    adjustments = []
    if h < size or w < size:
        adjustments.append(f"padded:{change}")
    if h > size or w > size:
        adjustments.append(f"cropped:{change}")
    return out, tuple(adjustments)


def decode_bytes(data: bytes, size: int = INPUT_SIZE) -> Decoded:
    """Decode encoded image bytes (BMP, PNG, JPEG, TIFF) like :func:`decode_image`."""
    if not data:
        return _fail("empty file (0 bytes)")
    raw = _imdecode(data)
    if raw is None or raw.size == 0:
        return _fail("not a readable image: unknown format, corrupt or truncated")
    adjustments: list[str] = []
    img = _to_uint8(raw, adjustments)
    if isinstance(img, str):
        return _fail(img)
    img = _to_rgb(img, adjustments)
    if isinstance(img, str):
        return _fail(img)
    img, fitted = fit_to_size(img, size)
    return Decoded(image=np.ascontiguousarray(img), adjustments=tuple(adjustments) + fitted)


def decode_image(path: str | os.PathLike[str], size: int = INPUT_SIZE) -> Decoded:
    """Decode one image file into uint8 RGB ``[size, size, 3]``; never raises for a bad file.

    Args:
        path: Image file (BMP, PNG, JPEG or TIFF).
        size: Side of the square output (the model's input size, 450 for C-NMC).

    Returns:
        A :class:`Decoded`; on failure ``image`` is None and ``error`` explains why
        (missing, unreadable, a directory, empty, corrupt/truncated, not an image).
    """
    data = _read_bytes(Path(path))
    if isinstance(data, Decoded):
        return data
    return decode_bytes(data, size)
