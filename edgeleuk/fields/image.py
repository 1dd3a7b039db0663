"""Read one microscope field (a camera frame of a smear), bounded, with its scale if the file states it.

Torch-free. The same bounds as a cell image (:mod:`edgeleuk.io.imageheader`): at most
:data:`FIELD_MAX_BYTES` are read, the header is parsed before anything is decoded and a field
may declare at most :data:`FIELD_MAX_PIXELS` (OpenCV's own cap, set when ``edgeleuk`` is
imported, is the same figure: a larger frame would not decode anyway). A TIFF's XResolution
and ResolutionUnit tags give the scale in micrometres per pixel.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.errors import EdgeleukError
from edgeleuk.core.optics import UM_PER_PX_RANGE
from edgeleuk.io import imageio
from edgeleuk.io.imageheader import (
    MAX_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    HeaderError,
    Refused,
    read_header,
    tiff_entries,
)

#: Most pixels of a field: 4096 x 4096 (16.8 MP), more than a 12-megapixel camera frame.
FIELD_MAX_PIXELS = MAX_IMAGE_PIXELS
#: Most bytes read from a field file (an uncompressed 16-bit RGBA frame of FIELD_MAX_PIXELS, plus 1 MiB).
FIELD_MAX_BYTES = MAX_FILE_BYTES
#: A field smaller than this on either side holds no white cell worth cutting: refused.
FIELD_MIN_SIDE = 64


class FieldError(EdgeleukError):
    """A field cannot be used (unreadable, too large, no scale, crowded): one error row for that field."""

    exit_code = 1


@dataclass(frozen=True, eq=False)
class FieldImage:
    """A decoded field.

    Attributes:
        rgb: Pixels, uint8 ``[H, W, 3]``.
        um_per_px: Micrometres per pixel from the file's resolution tags, or None.
        scale_source: ``"tiff"`` when ``um_per_px`` came from TIFF tags, else None.
    """

    rgb: np.ndarray
    um_per_px: float | None = None
    scale_source: str | None = None


def _read_bytes(path: Path) -> bytes:
    # The same bounded read as a cell image, with the same words for what went wrong.
    data = imageio.read_bytes(path)
    if isinstance(data, imageio.Decoded):
        raise FieldError(data.error or "cannot read file")
    return data


def _rational(data: bytes, order: str, big: bool, at: int) -> float | None:
    kind, count = struct.unpack_from(order + ("HQ" if big else "HI"), data, at + 2)
    if kind != 5 or count < 1:  # RATIONAL: two LONGs, always behind an offset in classic TIFF
        return None
    (offset,) = struct.unpack_from(order + ("Q" if big else "I"), data, at + (12 if big else 8))
    num, den = struct.unpack_from(order + "II", data, offset)
    return num / den if den else None


def tiff_um_per_px(data: bytes) -> float | None:
    """Micrometres per pixel from a TIFF's first IFD (XResolution, ResolutionUnit), or None.

    Unit 2 is the inch, 3 the centimetre; unit 1 (none) or a missing tag says nothing about
    scale. A resolution giving a scale outside :data:`UM_PER_PX_RANGE` is ignored (a
    72-dpi default is a screen's, not a microscope's).
    """
    if data[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return None
    xres, unit = None, 2  # TIFF's default unit is the inch
    try:
        order, big, entries = tiff_entries(data)
        for tag, at in entries:
            if tag == 282:
                xres = _rational(data, order, big, at)
            elif tag == 296:
                (unit,) = struct.unpack_from(order + "H", data, at + (12 if big else 8))
    except (struct.error, IndexError, OverflowError):  # OverflowError: a BigTIFF offset past 2^63
        return None
    per_unit_um = {2: 25400.0, 3: 10000.0}.get(unit)
    if not xres or per_unit_um is None:
        return None
    um = per_unit_um / xres
    return um if UM_PER_PX_RANGE[0] <= um <= UM_PER_PX_RANGE[1] else None


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FieldError(f"unsupported pixel type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise FieldError(f"unsupported image layout {img.shape} (expected gray, RGB or RGBA)")
    return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB


def decode_field(data: bytes, *, max_pixels: int = FIELD_MAX_PIXELS) -> FieldImage:
    """Decode a field's bytes (BMP, PNG, JPEG, TIFF) like :func:`read_field`."""
    if len(data) > FIELD_MAX_BYTES:
        raise FieldError(f"file too large ({len(data)} bytes; a field may have at most {FIELD_MAX_BYTES})")
    try:
        header = read_header(data)
    except Refused as exc:
        raise FieldError(str(exc)) from exc
    except HeaderError as exc:
        raise FieldError("not a readable image: unknown format, corrupt or truncated") from exc
    if header.pixels > max_pixels:
        raise FieldError(f"field too large ({header.width} x {header.height}; at most {max_pixels} pixels)")
    if min(header.width, header.height) < FIELD_MIN_SIDE:
        raise FieldError(f"field too small ({header.width} x {header.height}; at least {FIELD_MIN_SIDE} a side)")
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        raw = None
    if raw is None or raw.size == 0:
        raise FieldError("not a readable image: unknown format, corrupt or truncated")
    um = tiff_um_per_px(data) if header.fmt == "tiff" else None
    return FieldImage(rgb=_to_rgb(raw), um_per_px=um, scale_source="tiff" if um is not None else None)


def read_field(path: str | os.PathLike[str], *, max_pixels: int = FIELD_MAX_PIXELS) -> FieldImage:
    """Decode one field file into RGB uint8 with the scale its TIFF tags state, bounded.

    Args:
        path: A BMP, PNG, JPEG or TIFF file of any size up to ``max_pixels``.
        max_pixels: Most pixels (width x height) the header may declare.

    Raises:
        FieldError: Missing, unreadable, not an image, truncated, too many bytes or pixels, too small.
            The message is fit for an error row.
    """
    return decode_field(_read_bytes(Path(path)), max_pixels=max_pixels)
