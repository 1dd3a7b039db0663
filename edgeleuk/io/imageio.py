"""Decode one cell image into the 450x450 RGB uint8 array every model expects.

Torch-free. :func:`decode_image` never raises for a bad file: it returns a
:class:`Decoded` whose ``error`` says what is wrong, so a batch job can report
the file and carry on (no image is silently lost).

Decoding is bounded, because a few kilobytes can declare gigapixels: at most
:data:`MAX_FILE_BYTES` are read from a file, and its header (parsed by
:mod:`edgeleuk.io.imageheader`, before OpenCV allocates anything) may declare at
most :data:`MAX_IMAGE_PIXELS`, else the file gets the error
``image too large (W x H)``; TIFF sample layouts and JPEG scan counts that would
cost more than that are refused from the header too (:class:`~edgeleuk.io.imageheader.Refused`).
Only BMP, PNG, JPEG and TIFF content is handed to
OpenCV; files named like other image formats (:data:`UNSUPPORTED_EXTENSIONS`)
get an error that says so.

Adjustments are made only where the meaning of the pixels is kept, and only on
the part of the image the model sees (the crop comes first):

* other sizes are centre-cropped and/or centre-padded with black, per axis, to the
  input size (``cropped:WxH->450x450``, ``padded:WxH->450x450``). Images are
  never resized: the size of a cell is diagnostic;
* 16-bit samples are scaled to 8 bits by keeping the high byte, ``v >> 8``
  (``scaled:16bit``; 65535 -> 255, differs from ``round(v / 257)`` by at most 1);
* grayscale is replicated to three channels (``converted:gray``);
* an alpha channel is dropped (``dropped:alpha``).

OpenCV's own log is silenced once, on first use, for the whole process: every bad
file is reported by edgeleuk, once, in its error row.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from edgeleuk.core.meta import INPUT_SIZE
from edgeleuk.io.imageheader import MAX_FILE_BYTES, MAX_IMAGE_PIXELS, HeaderError, Refused, read_header

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "UNSUPPORTED_EXTENSIONS",
    "Decoded",
    "decode_bytes",
    "decode_image",
    "fit_to_size",
    "is_image_name",
    "read_bytes",
    "supported_extensions",
]

#: File extensions (lower case, with dot) that are treated as cell images.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: Extensions of other image formats a lab may meet (animations, web and phone formats,
#: JPEG 2000, microscope vendors' containers, DICOM). ``predict`` and ``watch`` give each
#: such file an error row that names its format, instead of passing over it in silence.
UNSUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".gif", ".webp", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".svg", ".ico",
    ".pbm", ".pgm", ".ppm", ".pnm", ".dng", ".raw", ".czi", ".nd2", ".lif", ".vsi", ".dcm",
)  # fmt: skip

_UNREADABLE = "not a readable image: unknown format, corrupt or truncated"


def supported_extensions() -> tuple[str, ...]:
    """The image file extensions edgeleuk reads, lower case with the dot."""
    return SUPPORTED_EXTENSIONS


def is_image_name(name: str | os.PathLike[str], *, unsupported: bool = False) -> bool:
    """Whether a file name has a supported image extension (case-insensitive).

    Args:
        name: File name or path.
        unsupported: Also accept :data:`UNSUPPORTED_EXTENSIONS` (files that look like
            images and deserve an error row rather than silence).
    """
    suffix = Path(name).suffix.lower()
    return suffix in SUPPORTED_EXTENSIONS or (unsupported and suffix in UNSUPPORTED_EXTENSIONS)


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


def read_bytes(path: Path) -> bytes | Decoded:
    """Read at most :data:`MAX_FILE_BYTES` of an image file (a cell or a field), bounded before reading.

    Returns:
        The file's bytes, or a failed :class:`Decoded` whose ``error`` says why, fit for an error row
        (missing or a broken link, a directory, a pipe or device, unreadable, empty, too many bytes).
    """
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            return _fail("is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):  # a pipe would block the reader forever
            return _fail("not a regular file (device, pipe or socket)")
        if st.st_size > MAX_FILE_BYTES:
            return _fail(_too_many_bytes(st.st_size))
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    except FileNotFoundError:
        hint = " (broken symbolic link)" if path.is_symlink() else ""
        return _fail(f"file not found{hint}")
    except PermissionError:
        return _fail("cannot read file: permission denied (check the file's permissions)")
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        return _fail(f"cannot read file: {reason}")
    if len(data) > MAX_FILE_BYTES:
        return _fail(_too_many_bytes(len(data)))
    if not data:
        return _fail("empty file (0 bytes)")
    return data


def _too_many_bytes(n: int) -> str:
    return f"file too large ({n} bytes; edgeleuk reads at most {MAX_FILE_BYTES} bytes per image)"


_cv2_module: ModuleType | None = None
_cv2_lock = threading.Lock()


def _cv2() -> ModuleType:
    """OpenCV, with its log silenced once for the process.

    Never saved and restored per call: the level is process-wide, and a save/restore
    pair on one thread undoes another's.
    """
    global _cv2_module
    with _cv2_lock:
        if _cv2_module is None:
            import cv2  # lazy: keeps ``import edgeleuk.io.data`` light

            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            _cv2_module = cv2
    return _cv2_module


def _imdecode(data: bytes) -> np.ndarray | None:
    cv2 = _cv2()
    try:
        # imdecode from bytes == imread(IMREAD_UNCHANGED) but also works for
        # non-ASCII paths on Windows, where cv2.imread fails.
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None


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


def _fit_changes(h: int, w: int, size: int) -> tuple[str, ...]:
    change = f"{w}x{h}->{size}x{size}"
    return tuple(
        [f"padded:{change}"] * (h < size or w < size) + [f"cropped:{change}"] * (h > size or w > size)
    )


def _crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size x size`` (at most) of an image of any layout, as a view (no copy)."""
    src_y, _ = _fit_axis(img.shape[0], size)
    src_x, _ = _fit_axis(img.shape[1], size)
    return img[src_y, src_x]


def _pad(img: np.ndarray, size: int) -> np.ndarray:
    """Centre an image no larger than ``size x size`` on black."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    _, dst_y = _fit_axis(h, size)
    _, dst_x = _fit_axis(w, size)
    out = np.zeros((size, size, *img.shape[2:]), dtype=img.dtype)
    out[dst_y, dst_x] = img
    return out


def fit_to_size(img: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[str, ...]]:
    """Centre-pad with black and/or centre-crop an RGB image to ``size x size``, never resizing.

    Returns:
        The fitted image and the adjustments made (empty if it already fitted).
    """
    h, w = img.shape[:2]
    return _pad(_crop(img, size), size), _fit_changes(h, w, size)


def decode_bytes(data: bytes, size: int = INPUT_SIZE) -> Decoded:
    """Decode encoded image bytes (BMP, PNG, JPEG, TIFF) like :func:`decode_image`."""
    if not data:
        return _fail("empty file (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        return _fail(_too_many_bytes(len(data)))
    try:
        header = read_header(data)
    except Refused as exc:  # float or wide TIFF samples, a JPEG of too many scans
        return _fail(str(exc))
    except HeaderError:
        return _fail(_UNREADABLE)
    if header.pixels > MAX_IMAGE_PIXELS:
        return _fail(f"image too large ({header.width} x {header.height})")
    raw = _imdecode(data)
    if raw is None or raw.size == 0:
        return _fail(_UNREADABLE)
    h, w = raw.shape[:2]
    adjustments: list[str] = []
    # Crop first: the conversions then touch at most size x size pixels, not the whole image.
    img = _to_uint8(_crop(raw, size), adjustments)
    if isinstance(img, str):
        return _fail(img)
    img = _to_rgb(img, adjustments)
    if isinstance(img, str):
        return _fail(img)
    fitted = _fit_changes(h, w, size)
    return Decoded(image=np.ascontiguousarray(_pad(img, size)), adjustments=(*adjustments, *fitted))


def decode_image(path: str | os.PathLike[str], size: int = INPUT_SIZE) -> Decoded:
    """Decode one image file into uint8 RGB ``[size, size, 3]``; never raises for a bad file.

    Args:
        path: Image file (BMP, PNG, JPEG or TIFF).
        size: Side of the square output (the model's input size, 450 for C-NMC).

    Returns:
        A :class:`Decoded`; on failure ``image`` is None and ``error`` explains why
        (missing, unreadable, a directory, empty, corrupt/truncated, not an image, an
        unsupported format, more than :data:`MAX_FILE_BYTES` or :data:`MAX_IMAGE_PIXELS`).
    """
    path = Path(path)
    if path.suffix.lower() in UNSUPPORTED_EXTENSIONS:
        return _fail(
            f"unsupported image format {path.suffix}: edgeleuk reads BMP, PNG, JPEG and TIFF; "
            "convert the file (e.g. to PNG) and classify it again"
        )
    data = read_bytes(path)
    if isinstance(data, Decoded):
        return data
    return decode_bytes(data, size)
