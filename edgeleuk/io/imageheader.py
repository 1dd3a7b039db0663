"""Image format and size read from the first bytes of a file, before anything is decoded.

Torch-free, pure Python. OpenCV cannot report an image's size without decoding
it, and a few kilobytes of PNG may declare 20000x20000 pixels (1.2 GB once
decoded). :func:`read_header` parses the headers of the four formats edgeleuk
reads (BMP, PNG, JPEG, TIFF), so :mod:`edgeleuk.io.imageio` can refuse an oversized
image before asking OpenCV to allocate it. The format is told by the file's
content, as OpenCV does, not by its extension.

The header also tells what a small file could make expensive, and such files are
refused (:class:`Refused`) before decoding: a TIFF with floating-point samples, more
than 16 bits per sample or more than 4 samples per pixel (a 377 KB float32 RGBA TIFF
decodes to 643 MB), and a JPEG with more than :data:`MAX_JPEG_SCANS` scans (decode time
grows with each scan: 2,000 scans in 165 KB took 21 s).
"""

from __future__ import annotations

import os
import re
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

#: Most memory one decode takes: the file's bytes, twice the largest decoded image (OpenCV
#: decodes into one buffer and converts the channel order into a second) and 16 MiB for the
#: decoders' own buffers: 401 MiB. Measured: an uncompressed 4096 x 4096 16-bit RGBA TIFF
#: (128 MiB) peaks 386 MiB above the process's baseline, a 16-bit RGBA PNG of that size 258 MiB
#: (``tests/io/test_imageio.py``).
MAX_DECODE_BYTES: int = MAX_FILE_BYTES + 2 * 8 * MAX_IMAGE_PIXELS + (16 << 20)

#: Most scans (SOS segments) edgeleuk decodes in one JPEG. A baseline JPEG has one (or one per
#: colour component), libjpeg's progressive script 10, mozjpeg's at most about 20; each scan is
#: another pass over the coefficients, so a crafted file of thousands of tiny scans stalls a decoder.
MAX_JPEG_SCANS: int = 32

#: Most bits per sample and samples per pixel of a TIFF (16-bit RGBA: 8 bytes a pixel, as in
#: :data:`MAX_FILE_BYTES`); floating-point samples are refused too (the decoded copy is float32).
MAX_TIFF_BITS: int = 16
MAX_TIFF_SAMPLES: int = 4

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
# The next marker after a scan's entropy-coded data: FF followed by anything but a stuffed 00,
# a restart marker (D0-D7) or another fill byte. A regex runs in C over the (bounded) file.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_TIFF_FLOAT_FORMATS = frozenset({3, 5, 6})  # SampleFormat: IEEE float, complex int, complex float


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


class Refused(HeaderError):
    """A well-formed header declaring what edgeleuk does not decode; the message says what, for an error row."""


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


def _jpeg_segment(data: bytes, pos: int) -> tuple[int, int]:
    """``(marker, position after the marker)`` of the segment at ``pos``."""
    if data[pos] != 0xFF:
        raise HeaderError("JPEG segment does not start with a marker")
    while data[pos] == 0xFF:  # fill bytes may pad a marker
        pos += 1
    return data[pos], pos + 1


def _jpeg_scans(data: bytes, pos: int) -> int:
    """Scans from ``pos`` (just after the frame header) to the end of the image, stopping past the cap.

    Segments are skipped by their lengths and each scan's entropy-coded data by a search for
    the next marker, so an embedded thumbnail's scans are not counted. A file cut short ends
    the count: whether what is there decodes is OpenCV's to say.
    """
    scans = 0
    try:
        while scans <= MAX_JPEG_SCANS:
            marker, pos = _jpeg_segment(data, pos)
            if marker in _JPEG_NO_LENGTH:
                continue
            if marker == 0xD9:  # end of image
                break
            (length,) = struct.unpack_from(">H", data, pos)
            if length < 2:
                break
            pos += length
            if marker == 0xDA:
                scans += 1
                found = _JPEG_NEXT_MARKER.search(data, pos)
                if found is None:
                    break
                pos = found.start()
    except (struct.error, IndexError, HeaderError):
        pass
    return scans


def _jpeg(data: bytes) -> Header:
    pos = 2
    while True:
        marker, pos = _jpeg_segment(data, pos)
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            raise HeaderError("JPEG without a frame header")
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            if _jpeg_scans(data, pos + length) > MAX_JPEG_SCANS:
                raise Refused(
                    f"JPEG with more than {MAX_JPEG_SCANS} scans (a progressive JPEG has about 10): refused "
                    "unread, its decode time grows with every scan; save the image again"
                )
            return Header("jpeg", width, height)
        if length < 2:
            raise HeaderError("JPEG segment with a bad length")
        pos += length


# TIFF tags read: ImageWidth, ImageLength, BitsPerSample, SamplesPerPixel, SampleFormat.
_TIFF_TAGS = (256, 257, 258, 277, 339)
_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8


def _tiff_values(data: bytes, order: str, big: bool, at: int) -> list[int]:
    """The values of the IFD entry at ``at`` (at most 16 of them): inline, or where its offset points."""
    kind, count = struct.unpack_from(order + ("HQ" if big else "HI"), data, at + 2)
    fmt = _TIFF_TYPES.get(kind)
    if fmt is None:
        raise HeaderError(f"TIFF tag of type {kind} where a number belongs")
    count = min(count, 16)
    value_at = at + (12 if big else 8)
    if count * struct.calcsize(fmt) > (8 if big else 4):
        (value_at,) = struct.unpack_from(order + ("Q" if big else "I"), data, value_at)
    return list(struct.unpack_from(order + fmt * count, data, value_at))


def _tiff_refusal(tags: dict[int, list[int]]) -> str | None:
    """Why a TIFF's sample layout is refused before decoding, or None (defaults: 1 sample of 1 bit)."""
    samples = max(tags.get(277) or [1])
    bits = max(tags.get(258) or [1])
    if _TIFF_FLOAT_FORMATS & set(tags.get(339) or []):
        return "unsupported TIFF: floating-point samples (edgeleuk reads 8- and 16-bit integer images)"
    if bits > MAX_TIFF_BITS:
        return f"unsupported TIFF: {bits} bits per sample (edgeleuk reads at most {MAX_TIFF_BITS})"
    if samples > MAX_TIFF_SAMPLES:
        return (f"unsupported TIFF: {samples} samples per pixel (edgeleuk reads at most "
                f"{MAX_TIFF_SAMPLES}: gray, RGB, RGBA)")
    return None


def tiff_entries(data: bytes) -> tuple[str, bool, list[tuple[int, int]]]:
    """The first IFD of a TIFF or BigTIFF: byte order, BigTIFF or not, and ``(tag, entry offset)`` pairs.

    At most 4096 entries are read. Raises what ``struct`` raises on a header cut short
    (``struct.error``, ``IndexError``, or ``OverflowError`` for a BigTIFF offset past 2^63).
    """
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        (ifd,) = struct.unpack_from(order + "Q", data, 8)
        (count,) = struct.unpack_from(order + "Q", data, ifd)
        entry, first = 20, ifd + 8
    else:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        entry, first = 12, ifd + 2
    offsets = [first + i * entry for i in range(min(count, 4096))]
    return order, big, [(struct.unpack_from(order + "H", data, at)[0], at) for at in offsets]


def _tiff(data: bytes) -> Header:
    order, big, entries = tiff_entries(data)
    tags: dict[int, list[int]] = {}
    for tag, at in entries:
        if tag in _TIFF_TAGS:
            tags[tag] = _tiff_values(data, order, big, at)
    if not tags.get(256) or not tags.get(257):
        raise HeaderError("TIFF without ImageWidth and ImageLength")
    why = _tiff_refusal(tags)
    if why:
        raise Refused(why)
    return Header("tiff", tags[256][0], tags[257][0])


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
    except (struct.error, IndexError, OverflowError) as exc:  # OverflowError: a BigTIFF offset past 2^63
        raise HeaderError("header cut short") from exc
