"""decode_image: the 450x450 RGB contract, every adjustment, and bad files that must not crash."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeleuk.io import imageio
from edgeleuk.io.imageheader import (
    MAX_IMAGE_PIXELS,
    OPENCV_PIXELS_ENV,
    Header,
    HeaderError,
    limit_opencv,
    read_header,
)
from edgeleuk.io.imageio import (
    Decoded,
    decode_bytes,
    decode_image,
    fit_to_size,
    is_image_name,
    supported_extensions,
)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(path: Path, rgb_or_raw: np.ndarray, bgr: bool = True) -> Path:
    img = rgb_or_raw[:, :, ::-1] if bgr and rgb_or_raw.ndim == 3 and rgb_or_raw.shape[2] == 3 else rgb_or_raw
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def good_bmp(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rgb = _rgb(450, 450)
    return _write(tmp_path / "cell.bmp", rgb), rgb


def test_bmp_decodes_to_rgb_unchanged(good_bmp):
    path, rgb = good_bmp
    d = decode_image(path)
    assert d.ok and d.error is None and d.adjustments == ()
    assert d.image.dtype == np.uint8 and d.image.shape == (450, 450, 3)
    np.testing.assert_array_equal(d.image, rgb)  # channel order is RGB, not OpenCV's BGR


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
def test_lossless_formats_roundtrip(tmp_path, ext):
    rgb = _rgb(450, 450, 1)
    d = decode_image(_write(tmp_path / f"c{ext}", rgb))
    assert d.ok
    np.testing.assert_array_equal(d.image, rgb)


def test_jpeg_decodes(tmp_path):
    rgb = np.full((450, 450, 3), (200, 40, 90), np.uint8)
    d = decode_image(_write(tmp_path / "c.JPG", rgb))
    assert d.ok
    assert np.abs(d.image.astype(int) - rgb).max() <= 3  # lossy but colour order right


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    bmp = cv2.imencode(".bmp", _rgb(450, 450))[1].tobytes()
    files = {
        "zero-byte": b"",
        "corrupt header": b"XX" + bmp[2:],
        "truncated": bmp[: len(bmp) // 2],
        "text": b"this is not an image\n",
    }
    out = {}
    for name, data in files.items():
        p = tmp_path / f"{name.replace(' ', '_')}.bmp"
        p.write_bytes(data)
        out[name] = p
    (tmp_path / "folder.bmp").mkdir()
    out["directory"] = tmp_path / "folder.bmp"
    os.symlink(tmp_path / "nowhere.bmp", tmp_path / "broken.bmp")
    out["broken symlink"] = tmp_path / "broken.bmp"
    out["missing"] = tmp_path / "missing.bmp"
    return out


UNREADABLE = "not a readable image: unknown format, corrupt or truncated"


@pytest.mark.parametrize(
    "kind, error",
    [
        ("zero-byte", "empty file (0 bytes)"),
        ("corrupt header", UNREADABLE),
        ("truncated", UNREADABLE),
        ("text", UNREADABLE),
        ("directory", "is a directory, not an image file"),
        ("broken symlink", "file not found (broken symbolic link)"),
        ("missing", "file not found"),
    ],
)
def test_bad_files_give_errors_not_exceptions(tmp_path, kind, error):
    # The error column of a row: people and scripts read (and filter on) this exact text.
    d = decode_image(_bad_files(tmp_path)[kind])
    assert isinstance(d, Decoded)
    assert not d.ok and d.image is None and d.adjustments == ()
    assert d.error == error


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_named_pipe_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "pipe.bmp")
    d = decode_image(tmp_path / "pipe.bmp")
    assert not d.ok and d.error == "not a regular file (device, pipe or socket)"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read chmod 000 files")
def test_unreadable_file(good_bmp):
    path, _ = good_bmp
    path.chmod(0)
    try:
        d = decode_image(path)
    finally:
        path.chmod(0o644)
    assert not d.ok and "permission denied" in d.error


@pytest.mark.parametrize("exc, error", [
    (PermissionError(13, "Permission denied"), "cannot read file: permission denied (check the file's permissions)"),
    (OSError(5, "Input/output error"), "cannot read file: Input/output error"),
    (OSError(5, ""), "cannot read file: EIO"),  # no text: the errno's name
    (OSError("stale handle"), "cannot read file: stale handle"),  # no errno either: the exception itself
])
def test_os_errors_while_reading(good_bmp, monkeypatch, exc, error):
    """Root reads chmod 000 files, so the unreadable case is simulated at the OS call."""
    path, _ = good_bmp

    def refuse(_path, *args, **kwargs):
        raise exc

    monkeypatch.setattr(Path, "open", refuse)
    d = decode_image(path)
    assert not d.ok and d.error == error


def test_a_file_that_grew_past_the_cap_after_stat_is_refused(good_bmp, monkeypatch) -> None:
    # stat saw a file within the cap; by the time it is read it has grown: at most cap + 1 bytes are read.
    path, _ = good_bmp
    cap = path.stat().st_size
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", cap)
    monkeypatch.setattr(Path, "open", lambda _path, *a, **k: io.BytesIO(bytes(cap + 100)))
    d = decode_image(path)
    assert d.error == f"file too large ({cap + 1} bytes; edgeleuk reads at most {cap} bytes per image)"


def test_decode_bytes_caps_the_bytes_too(monkeypatch) -> None:
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", 64)
    assert decode_bytes(bytes(65)).error == "file too large (65 bytes; edgeleuk reads at most 64 bytes per image)"
    assert decode_bytes(bytes(64)).error == UNREADABLE  # at the cap: read, then found to be no image


def test_a_one_pixel_image_is_padded_not_refused() -> None:
    d = decode_bytes(cv2.imencode(".png", np.full((1, 1), 9, np.uint8))[1].tobytes())
    assert d.ok and d.adjustments == ("converted:gray", "padded:1x1->450x450")
    assert d.image.dtype == np.uint8 and d.image[224, 224].tolist() == [9, 9, 9] and int(d.image.sum()) == 27


@pytest.mark.parametrize(("raw", "error"), [
    (np.zeros((4, 4), np.float32), "unsupported pixel type float32 (expected 8- or 16-bit)"),
    (np.zeros((4, 4, 2), np.uint8), "unsupported image layout (4, 4, 2) (expected gray, RGB or RGBA)"),
])
def test_a_decoded_image_of_a_type_we_do_not_take_is_a_failed_decode_naming_it(
        monkeypatch: pytest.MonkeyPatch, raw: np.ndarray, error: str) -> None:
    # The header checks keep such files from OpenCV; should one get through, it is one error row, not a crash.
    monkeypatch.setattr(imageio, "_imdecode", lambda data: raw)
    d = decode_bytes(cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes())
    assert not d.ok and d.image is None and d.error == error


def test_layouts_and_pixel_types_opencv_never_gives_are_refused_with_their_reason() -> None:
    adjustments: list[str] = []
    assert imageio._to_uint8(np.zeros((2, 2), np.float32), adjustments) == (
        "unsupported pixel type float32 (expected 8- or 16-bit)")
    assert imageio._to_rgb(np.zeros((2, 2, 2), np.uint8), adjustments) == (
        "unsupported image layout (2, 2, 2) (expected gray, RGB or RGBA)")
    assert imageio._to_rgb(np.zeros((2, 2, 3, 1), np.uint8), adjustments) == (
        "unsupported image layout (2, 2, 3, 1) (expected gray, RGB or RGBA)")
    assert adjustments == []
    one_channel = np.arange(4, dtype=np.uint8).reshape(2, 2, 1)
    rgb = imageio._to_rgb(one_channel, adjustments)
    assert adjustments == ["converted:gray"] and rgb.shape == (2, 2, 3) and (rgb[:, :, 2] == one_channel[:, :, 0]).all()


def test_ok_needs_an_image_and_no_error() -> None:
    assert Decoded(np.zeros((1, 1, 3), np.uint8)).ok
    assert not Decoded(None).ok
    assert not Decoded(np.zeros((1, 1, 3), np.uint8), error="found bad later").ok


def test_grayscale_is_replicated(tmp_path):
    gray = _rgb(450, 450)[:, :, 0]
    d = decode_image(_write(tmp_path / "g.png", gray))
    assert d.ok and d.adjustments == ("converted:gray",)
    for c in range(3):
        np.testing.assert_array_equal(d.image[:, :, c], gray)


def test_alpha_is_dropped(tmp_path):
    rgb = _rgb(450, 450)
    bgra = np.dstack([rgb[:, :, ::-1], np.full((450, 450), 7, np.uint8)])
    d = decode_image(_write(tmp_path / "a.png", bgra, bgr=False))
    assert d.ok and d.adjustments == ("dropped:alpha",)
    np.testing.assert_array_equal(d.image, rgb)


def test_16bit_keeps_high_byte(tmp_path):
    raw = np.random.default_rng(3).integers(0, 65536, (450, 450, 3), dtype=np.uint16)
    d = decode_image(_write(tmp_path / "w.png", raw, bgr=False))
    assert d.ok and d.adjustments == ("scaled:16bit",)
    np.testing.assert_array_equal(d.image, (raw[:, :, ::-1] >> 8).astype(np.uint8))


def test_small_image_is_centre_padded_not_resized(tmp_path):
    rgb = np.full((300, 300, 3), 200, np.uint8)
    d = decode_image(_write(tmp_path / "s.bmp", rgb))
    assert d.ok and d.adjustments == ("padded:300x300->450x450",) and d.image.dtype == np.uint8
    np.testing.assert_array_equal(d.image[75:375, 75:375], rgb)
    assert d.image[:75].max() == 0 and d.image[375:].max() == 0
    assert d.image[:, :75].max() == 0 and d.image[:, 375:].max() == 0


def test_large_image_is_centre_cropped(tmp_path):
    rgb = _rgb(500, 600, 5)  # height 500, width 600
    d = decode_image(_write(tmp_path / "l.png", rgb))
    assert d.ok and d.adjustments == ("cropped:600x500->450x450",)
    np.testing.assert_array_equal(d.image, rgb[25:475, 75:525])


def test_mixed_axes_pad_and_crop(tmp_path):
    rgb = _rgb(300, 600, 6)
    d = decode_image(_write(tmp_path / "m.png", rgb))
    assert d.adjustments == ("padded:600x300->450x450", "cropped:600x300->450x450")
    np.testing.assert_array_equal(d.image[75:375], rgb[:, 75:525])
    assert d.image[:75].max() == 0


def test_other_size_argument():
    img, adj = fit_to_size(np.ones((5, 4, 3), np.uint8), size=6)
    assert img.shape == (6, 6, 3) and adj == ("padded:4x5->6x6",)
    # Odd margins put the extra black row/column after the image.
    assert img[:5, 1:5].min() == 1 and img[5].max() == 0 and img[:, 0].max() == 0 and img[:, 5].max() == 0


def test_decode_image_fits_to_the_size_asked(tmp_path):
    # A model with another input size (e.g. 224) gets its own square, from a file as from bytes.
    rgb = _rgb(4, 5)
    d = decode_image(_write(tmp_path / "tiny.bmp", rgb), size=6)
    assert d.ok and d.image.shape == (6, 6, 3) and d.adjustments == ("padded:5x4->6x6",)
    np.testing.assert_array_equal(d.image[1:5, 0:5], rgb)


def test_float_tiff_is_refused(tmp_path):
    path = tmp_path / "f.tif"
    assert cv2.imwrite(str(path), np.full((450, 450, 3), 0.5, np.float32))
    d = decode_image(path)
    assert not d.ok and d.error.startswith("unsupported TIFF: floating-point samples")


def test_decode_bytes_empty():
    assert decode_bytes(b"").error == "empty file (0 bytes)"


def test_supported_extensions():
    assert set(supported_extensions()) == {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
    assert is_image_name("A.BMP") and is_image_name("x/y.tiff")
    assert not is_image_name("notes.txt") and not is_image_name("bmp")


# --- Bounded decoding: sizes read from the header, before OpenCV allocates anything ---------------


def _png_declaring(width: int, height: int, rows_of_zeros: int = 1) -> bytes:
    """A valid PNG header declaring ``width x height`` 8-bit gray, with a small zlib IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * rows_of_zeros)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _bmp_declaring(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + 64, 0, 0, 14 + len(dib)) + dib + b"\0" * 64


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG (with an EXIF-like APP1 segment first) whose frame header is rewritten."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 100) + b"\0" * 100
    data[2:2] = app1
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _tiff_declaring(width: int, height: int, order: str = "<") -> bytes:
    magic = b"II*\0" if order == "<" else b"MM\0*"
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 1)]
    ifd = struct.pack(order + "H", len(entries))
    ifd += b"".join(struct.pack(order + "HHII", *e) for e in entries) + struct.pack(order + "I", 0)
    return magic + struct.pack(order + "I", 8) + ifd


BOMBS = {
    "png": lambda: _png_declaring(20000, 20000),
    "bmp": lambda: _bmp_declaring(20000, 20000),
    "jpeg": lambda: _jpeg_declaring(20000, 20000),
    "tiff-le": lambda: _tiff_declaring(20000, 20000, "<"),
    "tiff-be": lambda: _tiff_declaring(20000, 20000, ">"),
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    def must_not_decode(data: bytes) -> None:
        raise AssertionError("OpenCV was asked to decode a bomb")

    monkeypatch.setattr(imageio, "_imdecode", must_not_decode)
    path = tmp_path / "bomb.img"
    path.write_bytes(BOMBS[kind]())
    d = decode_image(path)
    assert not d.ok and d.error == "image too large (20000 x 20000)"


def _tiff_with(tags: dict[int, list[int]], order: str = "<") -> bytes:
    """A classic TIFF header of SHORT tags (values past 2 stored after the IFD, as writers do)."""
    magic = b"II*\0" if order == "<" else b"MM\0*"
    extra_at = 8 + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag, values in sorted(tags.items()):
        packed = struct.pack(order + "H" * len(values), *values)
        if len(packed) <= 4:
            field = packed.ljust(4, b"\0")  # left-justified in the value field, either byte order
        else:
            field, extra = struct.pack(order + "I", extra_at + len(extra)), extra + packed
        entries += struct.pack(order + "HHI", tag, 3, len(values)) + field
    ifd = struct.pack(order + "H", len(tags)) + entries + struct.pack(order + "I", 0)
    return magic + struct.pack(order + "I", 8) + ifd + extra


def _progressive_jpeg(extra_scans: int) -> bytes:
    """A real progressive JPEG with its smallest scan repeated ``extra_scans`` more times.

    libjpeg decodes such a stream (with a warning), one pass per scan: 2,000 scans in 57 KB
    kept OpenCV busy for 10 s on a 2048 x 2048 image.
    """
    data = cv2.imencode(".jpg", np.full((256, 256, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1]
    data = data.tobytes()
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"] + [len(data) - 2]
    smallest = min((data[a:b] for a, b in zip(starts[1:], starts[2:], strict=False)), key=len)
    return data[:-2] + smallest * extra_scans + b"\xff\xd9"


HEADER_REFUSALS = {
    "float32 RGBA TIFF 4096x4096": (
        lambda: _tiff_with({256: [4096], 257: [4096], 258: [32] * 4, 277: [4], 339: [3] * 4}),
        "unsupported TIFF: floating-point samples",
    ),
    "float64 gray TIFF, big-endian": (
        lambda: _tiff_with({256: [64], 257: [64], 258: [64], 277: [1], 339: [3]}, ">"),
        "unsupported TIFF: floating-point samples",
    ),
    "32-bit integer TIFF": (
        lambda: cv2.imencode(".tiff", np.zeros((16, 16), np.int32))[1].tobytes(),
        "unsupported TIFF: 32 bits per sample (edgeleuk reads at most 16)",
    ),
    "six samples per pixel": (
        lambda: _tiff_with({256: [64], 257: [64], 258: [8] * 6, 277: [6]}),
        "unsupported TIFF: 6 samples per pixel (edgeleuk reads at most 4: gray, RGB, RGBA)",
    ),
    "float32 RGBA TIFF from OpenCV": (
        lambda: cv2.imencode(".tiff", np.zeros((16, 16, 4), np.float32))[1].tobytes(),
        "unsupported TIFF: floating-point samples",
    ),
    "progressive JPEG with 2000 scans": (
        lambda: _progressive_jpeg(1990),
        "JPEG with more than 32 scans",
    ),
}


@pytest.mark.parametrize("kind", sorted(HEADER_REFUSALS))
def test_costly_sample_layouts_and_scan_counts_are_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    make, error = HEADER_REFUSALS[kind]

    def must_not_decode(data: bytes) -> None:
        raise AssertionError("OpenCV was asked to decode a file its header refuses")

    data = make()
    monkeypatch.setattr(imageio, "_imdecode", must_not_decode)
    d = decode_bytes(data)
    assert not d.ok and d.error.startswith(error), d.error


@pytest.mark.parametrize(
    "raw",
    [np.zeros((64, 64, 4), np.uint16), np.zeros((64, 64, 3), np.uint16), np.zeros((64, 64), np.uint8)],
    ids=["16-bit RGBA", "16-bit RGB", "8-bit gray"],
)
def test_tiffs_within_the_bounds_still_decode(raw: np.ndarray) -> None:
    d = decode_bytes(cv2.imencode(".tiff", raw)[1].tobytes())
    assert d.ok, d.error


def test_ordinary_progressive_jpegs_still_decode() -> None:
    assert decode_bytes(_progressive_jpeg(0)).ok  # libjpeg's own script: 10 scans
    assert decode_bytes(_progressive_jpeg(20)).ok  # 30 scans: within the cap


def test_the_worst_decode_stays_within_its_declared_bound(tmp_path: Path) -> None:
    """An uncompressed 4096 x 4096 16-bit RGBA TIFF: the largest file and image the checks let through."""
    from edgeleuk.io.imageheader import MAX_DECODE_BYTES, MAX_FILE_BYTES

    path = tmp_path / "worst.tiff"
    assert cv2.imwrite(str(path), np.zeros((4096, 4096, 4), np.uint16), [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    assert path.stat().st_size <= MAX_FILE_BYTES
    code = (
        "import sys\n"
        "from edgeleuk.io import imageio\n"
        "def hwm():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "imageio._cv2(); base = hwm(); d = imageio.decode_image(sys.argv[1])\n"
        "print(d.ok, (hwm() - base) * 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    ok, grew = proc.stdout.split()
    assert ok == "True", proc.stderr
    assert int(grew) <= MAX_DECODE_BYTES, f"{int(grew) / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "ext, shape, dtype",
    [
        (".bmp", (300, 500, 3), np.uint8),
        (".bmp", (300, 500), np.uint8),
        (".png", (301, 499), np.uint16),
        (".png", (7, 9, 4), np.uint8),
        (".jpg", (123, 456, 3), np.uint8),
        (".tif", (45, 67, 3), np.uint16),
        (".tiff", (450, 450), np.uint8),
    ],
)
def test_header_sizes_match_what_opencv_writes(tmp_path: Path, ext: str, shape: tuple, dtype) -> None:
    img = np.zeros(shape, dtype)
    data = cv2.imencode(ext, img)[1].tobytes()
    header = read_header(data)
    assert (header.height, header.width) == shape[:2]
    assert decode_bytes(data).ok


def test_a_just_small_enough_image_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 500 * 450)
    assert decode_bytes(cv2.imencode(".png", np.zeros((450, 500), np.uint8))[1].tobytes()).ok
    d = decode_bytes(cv2.imencode(".png", np.zeros((451, 500), np.uint8))[1].tobytes())
    assert d.error == "image too large (500 x 451)"


def test_a_file_over_the_byte_cap_is_not_read(good_bmp, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = good_bmp
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", 1000)
    d = decode_image(path)
    assert not d.ok and d.error.startswith("file too large (") and "at most 1000 bytes" in d.error


def test_a_file_of_exactly_the_byte_cap_is_read(good_bmp, monkeypatch: pytest.MonkeyPatch) -> None:
    path, rgb = good_bmp
    size = path.stat().st_size
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", size)
    d = decode_image(path)
    assert d.ok and d.adjustments == ()
    np.testing.assert_array_equal(d.image, rgb)
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", size - 1)
    d = decode_image(path)
    assert d.error == f"file too large ({size} bytes; edgeleuk reads at most {size - 1} bytes per image)"
    assert d.adjustments == () and d.image is None


@pytest.mark.parametrize(
    "data", [b"\x89PNG\r\n\x1a\n\0\0", b"BM\0\0", b"\xff\xd8\xff", b"II*\0\xff\xff\xff\x7f"]
)
def test_truncated_headers_are_unreadable_not_crashes(data: bytes) -> None:
    with pytest.raises(HeaderError):
        read_header(data)
    assert decode_bytes(data).error.startswith("not a readable image")


def test_conversions_run_on_the_crop_not_the_whole_image(tmp_path: Path) -> None:
    """A big 16-bit gray image: the shift, gray repeat and BGR->RGB touch only 450x450 pixels."""
    raw = np.full((3000, 3000), 40000, np.uint16)
    raw[1275:1725, 1275:1725] = 65535  # the centre crop
    data = cv2.imencode(".png", raw)[1].tobytes()
    tracemalloc.start()
    try:
        d = decode_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert d.ok and d.adjustments == ("scaled:16bit", "converted:gray", "cropped:3000x3000->450x450")
    assert (d.image == 255).all()
    # The decoded image itself (18 MB) plus small change; the old order also held a shifted
    # full-size copy (18 MB), its 8-bit copy (9 MB) and a 3-channel repeat (27 MB).
    assert peak < raw.nbytes * 1.25, peak


def test_opencv_log_level_is_set_once_not_saved_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good_bmp
) -> None:
    path, _ = good_bmp
    decode_image(path)  # first use may set it
    calls = []
    real = cv2.utils.logging.setLogLevel
    monkeypatch.setattr(cv2.utils.logging, "setLogLevel", lambda level: calls.append(level) or real(level))
    for _ in range(3):
        decode_image(path)
        decode_bytes(b"not an image, a text file")
    assert calls == []  # the process-wide level is not toggled per decode (other threads decode too)
    assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT


def test_opencv_pixel_cap_is_set_before_cv2_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    code = "import edgeleuk, os; print(os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(imageio.MAX_IMAGE_PIXELS)


# --- Files named like images of formats edgeleuk does not read --------------------------------------


def test_unsupported_image_formats_get_an_error_that_names_the_format(tmp_path: Path) -> None:
    path = tmp_path / "cell.GIF"
    path.write_bytes(b"GIF89a" + b"\0" * 20)
    d = decode_image(path)
    assert d.error == ("unsupported image format .GIF: edgeleuk reads BMP, PNG, JPEG and TIFF; convert the file "
                       "(e.g. to PNG) and classify it again")
    assert not is_image_name(path) and is_image_name(path, unsupported=True)
    assert not is_image_name("notes.txt", unsupported=True)


# --- JPEG headers byte by byte, and OpenCV's own cap ------------------------------------------------


def _sof(width: int, height: int) -> bytes:
    """A baseline start-of-frame segment: marker, length 17, 8-bit, height, width, 3 components."""
    return b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)


def test_jpeg_headers_are_walked_segment_by_segment() -> None:
    app = b"\xff\xe0" + struct.pack(">H", 6) + b"JFIF"
    assert read_header(b"\xff\xd8" + app + _sof(640, 480)) == Header("jpeg", 640, 480)
    # Fill bytes before a marker, a stand-alone restart marker, an empty segment (length 2, itself only).
    walked = b"\xff\xd8\xff\xff\xff\xd0" + b"\xff\xfe\x00\x02" + app + _sof(450, 450)
    assert read_header(walked) == Header("jpeg", 450, 450)
    # Sides and segment lengths are unsigned 16-bit: 40000 px, and a 40000-byte comment skipped whole.
    comment = b"\xff\xfe" + struct.pack(">H", 40000) + bytes(39998)
    assert read_header(b"\xff\xd8" + comment + _sof(40000, 33000)) == Header("jpeg", 40000, 33000)


@pytest.mark.parametrize(("data", "why"), [
    (b"\xff\xd8\x00\xe0\x00\x10", "JPEG segment does not start with a marker"),
    (b"\xff\xd8\xff\xd9", "JPEG without a frame header"),
    (b"\xff\xd8\xff\xda\x00\x0c", "JPEG without a frame header"),
    (b"\xff\xd8\xff\xe0\x00\x01", "JPEG segment with a bad length"),
    (b"\xff\xd8\xff\xe0\x00", "header cut short"),
])
def test_broken_jpeg_headers_say_what_is_wrong(data: bytes, why: str) -> None:
    with pytest.raises(HeaderError, match=f"^{why}$"):
        read_header(data)


def test_opencv_gets_our_pixel_cap_unless_one_was_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPENCV_PIXELS_ENV, raising=False)
    limit_opencv()
    assert os.environ[OPENCV_PIXELS_ENV] == str(MAX_IMAGE_PIXELS) == "16777216"
    monkeypatch.setenv(OPENCV_PIXELS_ENV, "1000")
    limit_opencv()
    assert os.environ[OPENCV_PIXELS_ENV] == "1000"
