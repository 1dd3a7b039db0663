"""Hostile fields end as a FieldError (one error row) or an empty result, never a crash."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from edgeleuk.fields import FIELD_MAX_BYTES, FIELD_MAX_PIXELS, FieldError, decode_field, find_cells, read_field
from edgeleuk.synth.fields import draw_field

MODEL_UM = 0.055


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_huge_field_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(30000, 30000) + b"\x00" * 64)
    with pytest.raises(FieldError, match="too large"):
        read_field(path)
    with pytest.raises(FieldError, match="too large"):
        find_cells(np.zeros((1, FIELD_MAX_PIXELS + 1, 3), np.uint8)[:, :, :], um_per_px=0.08,
                   model_um_per_px=MODEL_UM)


def test_truncated_empty_and_non_image_fields_are_errors(tmp_path):
    rgb, *_ = draw_field(np.random.default_rng(1), size=(512, 384))
    data = cv2.imencode(".png", rgb)[1].tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"not an image at all")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(tmp_path / "pipe.png")  # reading it would block forever
    with open(tmp_path / "big.png", "wb") as fh:  # sparse: over the cap without writing it
        fh.truncate(FIELD_MAX_BYTES + 1)
    unreadable = "not a readable image: unknown format, corrupt or truncated"
    # The same bounded read, and the same words, as a cell image (edgeleuk.io.imageio.read_bytes).
    for name, error in (("cut.png", unreadable), ("empty.png", "empty file (0 bytes)"), ("text.png", unreadable),
                        ("dir.png", "is a directory, not an image file"), ("missing.png", "file not found"),
                        ("link.png", "file not found (broken symbolic link)"),
                        ("pipe.png", "not a regular file (device, pipe or socket)"),
                        ("big.png", f"file too large ({FIELD_MAX_BYTES + 1} bytes; edgeleuk reads at most "
                                    f"{FIELD_MAX_BYTES} bytes per image)")):
        with pytest.raises(FieldError) as caught:
            read_field(tmp_path / name)
        assert str(caught.value) == error, name


def test_tiny_and_malformed_arrays_are_errors():
    for bad in (np.zeros((10, 10, 3), np.uint8), np.zeros((100, 100), np.uint8),
                np.zeros((100, 100, 3), np.float32), "field"):
        with pytest.raises(FieldError):
            find_cells(bad, um_per_px=0.08, model_um_per_px=MODEL_UM)


def test_a_field_without_white_cells_is_an_empty_result():
    rgb, *_ = draw_field(np.random.default_rng(2), size=(1024, 768), white_cells=0, pair=False, edge=False)
    res = find_cells(rgb, um_per_px=None, model_um_per_px=MODEL_UM)
    assert res.cells == [] and res.excluded["red_cell"] > 20


def test_a_field_full_of_overlapping_white_cells_is_refused_or_empty():
    rng = np.random.default_rng(3)
    field = np.full((768, 1024, 3), 245, np.uint8)
    for _ in range(400):  # overlapping bluish cells with dark nuclei everywhere
        x, y, r = int(rng.integers(0, 1024)), int(rng.integers(0, 768)), int(rng.integers(40, 80))
        cv2.circle(field, (x, y), r, (196, 168, 214), -1)
        cv2.circle(field, (x, y), r // 2, (112, 58, 142), -1)
    try:
        res = find_cells(field, um_per_px=0.08, model_um_per_px=MODEL_UM)
    except FieldError as exc:
        assert "crowded" in str(exc)
    else:
        assert res.cells == []


def test_a_field_full_of_touching_cells_gives_rows_or_an_error_never_a_crash():
    rng = np.random.default_rng(4)
    field = np.full((768, 1024, 3), 245, np.uint8)
    for y in range(60, 768, 110):  # a lattice of touching cells: 30 % of the field
        for x in range(60, 1024, 110):
            cv2.circle(field, (x, y), 56, (196, 168, 214), -1)
            cv2.circle(field, (x + int(rng.integers(-8, 8)), y), 30, (112, 58, 142), -1)
    try:
        res = find_cells(field, um_per_px=0.08, model_um_per_px=MODEL_UM)
    except FieldError:
        return
    assert all(c.image.shape == (450, 450, 3) for c in res.cells)


def test_tiff_resolution_tags_give_the_scale(tmp_path):
    rgb, *_ = draw_field(np.random.default_rng(5), size=(512, 384))
    path = tmp_path / "field.tif"
    params = [cv2.IMWRITE_TIFF_RESUNIT, 3, cv2.IMWRITE_TIFF_XDPI, 125000, cv2.IMWRITE_TIFF_YDPI, 125000]
    assert cv2.imwrite(str(path), rgb[:, :, ::-1], params)
    f = read_field(path)
    assert f.scale_source == "tiff" and f.um_per_px == pytest.approx(0.08)
    assert np.array_equal(f.rgb, rgb)
    png = decode_field(cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())
    assert png.um_per_px is None and png.scale_source is None


def test_a_bigtiff_resolution_offset_past_2_63_gives_no_scale_not_a_crash() -> None:
    """XResolution's value behind an offset no Python buffer can reach: no scale read, no OverflowError."""
    import struct

    from edgeleuk.fields.image import tiff_um_per_px

    head = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 1)
    entry = struct.pack("<HHQQ", 282, 5, 1, 2**63)  # XResolution, RATIONAL, its value at 2^63
    assert tiff_um_per_px(head + entry + bytes(16)) is None
