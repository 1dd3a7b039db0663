"""decode_image: the 450x450 RGB contract, every adjustment, and bad files that must not crash."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeleuk.imageio import (
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


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("zero-byte", "empty file"),
        ("corrupt header", "not a readable image"),
        ("truncated", "not a readable image"),
        ("text", "not a readable image"),
        ("directory", "directory"),
        ("broken symlink", "broken symbolic link"),
        ("missing", "not found"),
    ],
)
def test_bad_files_give_errors_not_exceptions(tmp_path, kind, needle):
    d = decode_image(_bad_files(tmp_path)[kind])
    assert isinstance(d, Decoded)
    assert not d.ok and d.image is None
    assert needle in d.error


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_named_pipe_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "pipe.bmp")
    d = decode_image(tmp_path / "pipe.bmp")
    assert not d.ok and "not a regular file" in d.error


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read chmod 000 files")
def test_unreadable_file(good_bmp):
    path, _ = good_bmp
    path.chmod(0)
    try:
        d = decode_image(path)
    finally:
        path.chmod(0o644)
    assert not d.ok and "permission denied" in d.error


@pytest.mark.parametrize("exc, needle", [(PermissionError(13, "Permission denied"), "permission denied"),
                                         (OSError(5, "Input/output error"), "Input/output error")])
def test_os_errors_while_reading(good_bmp, monkeypatch, exc, needle):
    """Root reads chmod 000 files, so the unreadable case is simulated at the OS call."""
    path, _ = good_bmp

    def refuse(_path):
        raise exc

    monkeypatch.setattr(Path, "read_bytes", refuse)
    d = decode_image(path)
    assert not d.ok and needle in d.error


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
    assert d.ok and d.adjustments == ("padded:300x300->450x450",)
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


def test_float_tiff_is_refused(tmp_path):
    path = tmp_path / "f.tif"
    assert cv2.imwrite(str(path), np.full((450, 450, 3), 0.5, np.float32))
    d = decode_image(path)
    assert not d.ok and "unsupported pixel type" in d.error


def test_decode_bytes_empty():
    assert decode_bytes(b"").error == "empty file (0 bytes)"


def test_supported_extensions():
    assert set(supported_extensions()) == {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
    assert is_image_name("A.BMP") and is_image_name("x/y.tiff")
    assert not is_image_name("notes.txt") and not is_image_name("bmp")
