"""Image format and size read from the first bytes of a file, before anything is decoded.

Torch-free, pure Python. OpenCV cannot report an image's size without decoding
it, and a few kilobytes of PNG may declare 20000x20000 pixels (1.2 GB once
decoded). :func:`read_header` parses the headers of the four formats edgeleuk
reads (BMP, PNG, JPEG, TIFF), so :mod:`edgeleuk.io.imageio` can refuse an oversized
image before asking OpenCV to allocate it. The format is told by the file's
content, as OpenCV does, not by its extension.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

#: Most pixels (width x height) edgeleuk decodes from one file: 4096 x 4096, 80 times a
#: 450 x 450 C-NMC cell and more than a 12-megapixel camera frame. A larger image is no
#: single-cell image; decoding it would cost up to 8 bytes a pixel (16-bit RGBA), so it
#: is refused from its header ("image too large (W x H)") before any memory is spent on it.
MAX_IMAGE_PIXELS: int = 4096 * 4096

#: Most bytes edgeleuk reads from one file: the largest uncompressed image within
#: :data:`MAX_IMAGE_PIXELS` (8 bytes a pixel) plus 1 MiB of headers and metadata (129 MiB).
#: With the pixel cap this bounds one decode at about 257 MiB, whatever the file claims.
MAX_FILE_BYTES: int = 8 * MAX_IMAGE_PIXELS + (1 << 20)

#: OpenCV's own pixel cap (its default is 2^30, a 20 GB decode), read once when cv2 loads.
OPENCV_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"


def limit_opencv() -> None:
    """Set OpenCV's pixel cap to :data:`MAX_IMAGE_PIXELS`, unless the user chose one.

    Defence in depth behind the header check: it only takes effect if it runs before
    ``cv2`` is first imported, which is why ``import edgeleuk`` calls it.
    """
    os.environ.setdefault(OPENCV_PIXELS_ENV, str(MAX_IMAGE_PIXELS))

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM stand alone


@dataclass(frozen=True)
class Header:
    """What a file's header declares.

    Attributes:
        fmt: ``"bmp"``, ``"png"``, ``"jpeg"`` or ``"tiff"``.
        width: Declared width in pixels.
        height: Declared height in pixels (a top-down BMP's negative height made positive).
    """

    fmt: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class HeaderError(ValueError):
    """The bytes start like no supported format, or their header is cut short or inconsistent."""


def _bmp(data: bytes) -> Header:
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:  # BITMAPCOREHEADER (OS/2): unsigned 16-bit sides
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return Header("bmp", abs(width), abs(height))


def _png(data: bytes) -> Header:
    length, kind, width, height = struct.unpack_from(">I4sII", data, 8)
    if kind != b"IHDR" or length < 8:
        raise HeaderError("PNG without an IHDR chunk first")
    return Header("png", width, height)


def _jpeg(data: bytes) -> Header:
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise HeaderError("JPEG segment does not start with a marker")
        while data[pos] == 0xFF:  # fill bytes may pad a marker
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            raise HeaderError("JPEG without a frame header")
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return Header("jpeg", width, height)
        if length < 2:
            raise HeaderError("JPEG segment with a bad length")
        pos += length


def _tiff(data: bytes) -> Header:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        (ifd,) = struct.unpack_from(order + "Q", data, 8)
        (count,) = struct.unpack_from(order + "Q", data, ifd)
        entry, first, size = 20, ifd + 8, "Q"
    else:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        entry, first, size = 12, ifd + 2, "I"
    sides: dict[int, int] = {}
    for i in range(min(count, 4096)):
        tag, kind = struct.unpack_from(order + "HH", data, first + i * entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3), LONG (4) or LONG8 (16)
            value_at = first + i * entry + (12 if big else 8)
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind, size)
            (sides[tag],) = struct.unpack_from(order + fmt, data, value_at)
    if 256 not in sides or 257 not in sides:
        raise HeaderError("TIFF without ImageWidth and ImageLength")
    return Header("tiff", sides[256], sides[257])


def read_header(data: bytes) -> Header:
    """The format and declared size of an encoded image.

    Args:
        data: The file's bytes (the whole file, or at least its header).

    Raises:
        HeaderError: Not BMP, PNG, JPEG or TIFF, or the header is truncated or malformed.
    """
    if data.startswith(_PNG_SIGNATURE):
        parse = _png
    elif data.startswith(b"BM"):
        parse = _bmp
    elif data.startswith(b"\xff\xd8"):
        parse = _jpeg
    elif data[:4] in _TIFF_SIGNATURES:
        parse = _tiff
    else:
        raise HeaderError("unknown format")
    try:
        return parse(data)
    except (struct.error, IndexError) as exc:
        raise HeaderError("header cut short") from exc
