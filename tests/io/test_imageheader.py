"""read_header byte by byte: each format's fields, their bounds, and files that lie about them.

Pure bytes, no decoder: each header is built here field by field, so a test states exactly
which declared value must be read (or refused) and the whole file runs in well under a second.
"""

from __future__ import annotations

import struct

import pytest

from edgeleuk.io.imageheader import MAX_JPEG_SCANS, Header, HeaderError, Refused, read_header, tiff_entries
from edgeleuk.io.imageio import decode_bytes

# --- TIFF: classic and BigTIFF, either byte order ----------------------------------------------------

_FMT = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
_MAGIC = {("<", False): b"II*\0", (">", False): b"MM\0*", ("<", True): b"II+\0", (">", True): b"MM\0+"}


def _field(order: str, big: bool, kind: int, values: list[int]) -> bytes:
    """Values stored in the entry itself, left-justified in its 4 (8 for BigTIFF) bytes."""
    return struct.pack(order + _FMT[kind] * len(values), *values).ljust(8 if big else 4, b"\0")


def _entry(order: str, big: bool, tag: int, kind: int, count: int, field: bytes) -> bytes:
    return struct.pack(order + ("HHQ" if big else "HHI"), tag, kind, count) + field


def _inline(order: str, big: bool, tag: int, kind: int, values: list[int]) -> bytes:
    return _entry(order, big, tag, kind, len(values), _field(order, big, kind, values))


def _extra_at(n: int, big: bool) -> int:
    """Where the bytes after an IFD of ``n`` entries start (the IFD follows the file header)."""
    return 16 + 8 + 20 * n + 8 if big else 8 + 2 + 12 * n + 4


def _tiff(entries: list[bytes], *, order: str = "<", big: bool = False, count: int | None = None,
          ifd_at: int | None = None, extra: bytes = b"") -> bytes:
    """File header, one IFD right after it (unless ``ifd_at`` points elsewhere), then ``extra``."""
    n = len(entries) if count is None else count
    if big:
        head = _MAGIC[order, True] + struct.pack(order + "HHQ", 8, 0, 16 if ifd_at is None else ifd_at)
        ifd = struct.pack(order + "Q", n) + b"".join(entries) + struct.pack(order + "Q", 0)
    else:
        head = _MAGIC[order, False] + struct.pack(order + "I", 8 if ifd_at is None else ifd_at)
        ifd = struct.pack(order + "H", n) + b"".join(entries) + struct.pack(order + "I", 0)
    return head + ifd + extra


@pytest.mark.parametrize("order", ["<", ">"])
def test_bigtiff_headers_are_read_in_either_byte_order(order: str) -> None:
    entries = [
        _inline(order, True, 256, 16, [5000]),  # LONG8 width
        _inline(order, True, 257, 3, [3000]),  # SHORT height, left-justified in the 8-byte field
        _inline(order, True, 258, 3, [16, 16, 16, 16]),  # 8 bytes: still inline in a BigTIFF entry
        _inline(order, True, 277, 3, [4]),
    ]
    assert read_header(_tiff(entries, order=order, big=True)) == Header("tiff", 5000, 3000)
    # Inline in BigTIFF, as 258 above, but a classic TIFF stores 4 shorts after the IFD.
    refused = [*entries[:2], _inline(order, True, 258, 3, [8, 8, 8, 32])]
    with pytest.raises(Refused, match="^unsupported TIFF: 32 bits per sample"):
        read_header(_tiff(refused, order=order, big=True))


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_the_directory_lists_every_tag_unsigned_with_its_entry_offset(big: bool, order: str) -> None:
    # Tags past 32767 are common (34665 Exif, 33432 Copyright): read as SHORT, never negative.
    tags = [256, 257, 34665, 65535]
    data = _tiff([_inline(order, big, tag, 3, [1]) for tag in tags], order=order, big=big)
    first, size = (24, 20) if big else (10, 12)
    assert tiff_entries(data) == (order, big, [(tag, first + i * size) for i, tag in enumerate(tags)])


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_values_past_the_entry_field_are_read_where_the_offset_points(big: bool, order: str) -> None:
    # 9 BYTEs do not fit a BigTIFF entry's 8 bytes (5 do not fit a classic one's 4): they lie
    # after the IFD. Read from the offset field instead, they would be the offset's own bytes.
    count = 9 if big else 5
    at = _extra_at(3, big)
    entries = [_inline(order, big, 256, 3, [640]), _inline(order, big, 257, 3, [480]),
               _entry(order, big, 258, 1, count, struct.pack(order + ("Q" if big else "I"), at))]
    assert read_header(_tiff(entries, order=order, big=big, extra=bytes([8] * count))) == Header("tiff", 640, 480)
    with pytest.raises(Refused, match="^unsupported TIFF: 24 bits per sample"):
        read_header(_tiff(entries, order=order, big=big, extra=bytes([8] * (count - 1) + [24])))


@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_a_tag_declaring_billions_of_values_reads_only_sixteen(big: bool) -> None:
    # The count is unsigned (4 and 8 bytes): a huge one reads the first 16 values, where the offset
    # points, and no more (the file ends right after them).
    huge = (1 << 63) + 1 if big else (1 << 31) + 1
    entries = [_entry("<", big, 256, 3, huge, struct.pack("<Q" if big else "<I", _extra_at(2, big))),
               _inline("<", big, 257, 3, [480])]
    data = _tiff(entries, big=big, extra=struct.pack("<16H", 640, *range(15)))
    assert read_header(data) == Header("tiff", 640, 480)
    with pytest.raises(HeaderError, match="^header cut short$"):
        read_header(data[:-1])


@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_an_offset_past_the_end_is_cut_short_never_read_from_the_end(big: bool) -> None:
    # Offsets are unsigned: 2^32 - 6 (2^64 - 10) lies far past the file, not just before its end.
    count = 5 if big else 3
    past = (1 << (64 if big else 32)) - 2 * count
    entries = [_inline("<", big, 256, 3, [640]), _inline("<", big, 257, 3, [480]),
               _entry("<", big, 258, 3, count, struct.pack("<Q" if big else "<I", past))]
    with pytest.raises(HeaderError, match="^header cut short$"):
        read_header(_tiff(entries, big=big, extra=struct.pack("<5H", 8, 8, 8, 8, 8)))
    # The IFD's own offset too: one pointing 2^32 - len(IFD) (2^64 - ...) is not the IFD at the end.
    head = 16 if big else 8
    ifd = _tiff([_inline("<", big, 256, 3, [640]), _inline("<", big, 257, 3, [480])], big=big)[head:]
    data = _tiff([], big=big, ifd_at=(1 << (64 if big else 32)) - len(ifd))[:head] + ifd
    with pytest.raises(HeaderError, match="^header cut short$"):
        read_header(data)


@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_an_ifd_declaring_more_than_4096_entries_reads_the_first_4096(big: bool) -> None:
    size = _inline("<", big, 256, 3, [640]) + _inline("<", big, 257, 3, [480])
    filler = _inline("<", big, 1, 3, [0])  # tag 1: not read
    # A count with its top bit set (unsigned, 32770 or 2^63 + 2): the 4096 entries present are read.
    huge = (1 << 63) + 2 if big else 0x8002
    assert read_header(_tiff([size, *[filler] * 4094], big=big, count=huge)) == Header("tiff", 640, 480)
    # The width in entry 4097 is never reached.
    late = [_inline("<", big, 257, 3, [480]), *[filler] * 4095, _inline("<", big, 256, 3, [640])]
    with pytest.raises(HeaderError, match="^TIFF without ImageWidth and ImageLength$"):
        read_header(_tiff(late, big=big))


@pytest.mark.parametrize("tags", [(257,), (256,), (256, 258), (257, 258), ()])
def test_a_tiff_without_width_and_length_says_so(tags: tuple[int, ...]) -> None:
    entries = [_inline("<", False, tag, 3, [8]) for tag in tags]
    with pytest.raises(HeaderError, match="^TIFF without ImageWidth and ImageLength$") as caught:
        read_header(_tiff(entries))
    assert type(caught.value) is HeaderError  # malformed, not a refusal of a well-formed file


def test_a_tiff_size_of_the_wrong_type_says_so() -> None:
    entries = [_entry("<", False, 256, 2, 4, b"640\0"), _inline("<", False, 257, 3, [480])]  # ASCII
    with pytest.raises(HeaderError, match="^TIFF tag of type 2 where a number belongs$"):
        read_header(_tiff(entries))
    entries[0] = _entry("<", False, 256, 40000, 1, b"\0" * 4)
    with pytest.raises(HeaderError, match="^TIFF tag of type 40000 where a number belongs$"):
        read_header(_tiff(entries))


# --- BMP ------------------------------------------------------------------------------------------


def test_bmp_sides_are_read_by_the_header_kind() -> None:
    # An OS/2 BITMAPCOREHEADER (12 bytes) has unsigned 16-bit sides; a BITMAPINFOHEADER (40 bytes)
    # signed 32-bit ones, negative for a top-down image.
    core = b"BM" + struct.pack("<IHHI", 26, 0, 0, 26) + struct.pack("<IHHHH", 12, 40000, 300, 1, 24)
    assert read_header(core) == Header("bmp", 40000, 300)
    dib = struct.pack("<IiiHHIIiiII", 40, 640, -480, 1, 24, 0, 0, 0, 0, 0, 0)
    info = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + dib
    assert read_header(info) == Header("bmp", 640, 480)


# --- PNG ---------------------------------------------------------------------------------------------

_PNG = b"\x89PNG\r\n\x1a\n"


def _png(kind: bytes, length: int, width: int, height: int) -> bytes:
    return _PNG + struct.pack(">I4sII", length, kind, width, height) + bytes(9)


def test_png_sizes_are_unsigned_32_bit() -> None:
    assert read_header(_png(b"IHDR", 13, 3_000_000_000, 7)) == Header("png", 3_000_000_000, 7)
    assert read_header(_png(b"IHDR", 8, 450, 300)) == Header("png", 450, 300)  # long enough for both sides


@pytest.mark.parametrize(("kind", "length"), [(b"IDAT", 13), (b"IHDR", 7), (b"IHDR", 0)])
def test_a_png_without_an_ihdr_chunk_first_says_so(kind: bytes, length: int) -> None:
    with pytest.raises(HeaderError, match="^PNG without an IHDR chunk first$"):
        read_header(_png(kind, length, 450, 450))


# --- JPEG: the frame header and the scans after it ----------------------------------------------------

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_SOF = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 300, 400, 1) + bytes([1, 0x11, 0])  # gray, 400 x 300
# One scan: SOS (length 8, one component), then entropy-coded data holding a stuffed FF 00 and a
# restart marker, neither of which ends it.
_SCAN = b"\xff\xda" + struct.pack(">H", 8) + bytes([1, 1, 0, 0, 63, 0]) + b"\x12\xff\x00\x34\xff\xd3\x56"
_REFUSAL = (f"^JPEG with more than {MAX_JPEG_SCANS} scans \\(a progressive JPEG has about 10\\): refused "
            "unread, its decode time grows with every scan; save the image again$")


def _jpeg(scans: int, before: bytes = b"", between: bytes = b"") -> bytes:
    return _SOI + _SOF + before + between.join([_SCAN] * scans) + _EOI


def test_a_jpeg_of_exactly_the_scan_cap_is_read_and_one_more_is_refused() -> None:
    assert MAX_JPEG_SCANS == 32
    assert read_header(_jpeg(32)) == Header("jpeg", 400, 300)
    with pytest.raises(Refused, match=_REFUSAL):
        read_header(_jpeg(33))


def test_scans_are_counted_past_markers_and_segments_of_any_length() -> None:
    # A stand-alone TEM, an empty comment (length 2), a 40000-byte comment (length >= 2^15, unsigned)
    # and fill bytes before the scans and between them: all 33 scans are still counted.
    big_comment = b"\xff\xfe" + struct.pack(">H", 40000) + bytes(39998)
    before = b"\xff\x01" + b"\xff\xfe\x00\x02" + big_comment + b"\xff\xff"
    with pytest.raises(Refused, match=_REFUSAL):
        read_header(_jpeg(33, before=before))
    with pytest.raises(Refused, match=_REFUSAL):
        read_header(_jpeg(33, between=b"\xff\x01\xff\xfe\x00\x02"))


@pytest.mark.parametrize("tail", [
    _SCAN[:-3],  # scan data running to the end of the file, no marker after it
    b"\xff\xfe\x00\x01",  # a segment length under 2
    b"\xff\xfe\x00",  # a length cut short
    b"",  # no scan at all
])
def test_a_jpeg_cut_short_after_its_frame_header_is_left_to_the_decoder(tail: bytes) -> None:
    # Whether what is there decodes is OpenCV's to say; the header is read, nothing refused.
    assert read_header(_SOI + _SOF + _SCAN * 3 + tail) == Header("jpeg", 400, 300)


def test_a_bigtiff_offset_past_2_63_is_an_unreadable_file_not_a_crash() -> None:
    # 24 bytes whose IFD offset does not fit a C ssize_t: struct raised OverflowError, which
    # decode_bytes let through ("decoder crashed" rows in predict, a 500 from serve).
    data = b"II+\0" + struct.pack("<HHQ", 8, 0, (1 << 64) - 100) + bytes(8)
    with pytest.raises(HeaderError, match="^header cut short$"):
        read_header(data)
    assert decode_bytes(data).error == "not a readable image: unknown format, corrupt or truncated"


@pytest.mark.parametrize("data", [b"GIF89a\x01\x00\x01\x00", b"", b"\x00" * 64, b"B"],
                         ids=["gif", "empty", "zeros", "one-byte"])  # plain ids: mutmut passes them to pytest
def test_bytes_of_no_format_we_read_are_an_unknown_format(data: bytes) -> None:
    with pytest.raises(HeaderError, match="^unknown format$"):
        read_header(data)

