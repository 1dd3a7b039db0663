"""File helpers: hashing, the SYNTHETIC marker search and the shared CSV reader."""

import hashlib

import pytest

from edgeleuk.core.errors import DataError
from edgeleuk.io.files import SYNTHETIC_MARKER, read_csv, sha256_file, synthetic_root


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 5000  # > 1 MiB: more than one read
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_synthetic_root_walks_up_a_bounded_number_of_folders(tmp_path):
    (tmp_path / SYNTHETIC_MARKER).write_text("synthetic")
    deep = tmp_path / "a" / "b" / "c"
    (deep / "d").mkdir(parents=True)
    image = deep / "1.bmp"
    image.write_bytes(b"x")
    assert synthetic_root(tmp_path) == tmp_path.resolve()
    assert synthetic_root(deep) == tmp_path.resolve()  # three levels up
    assert synthetic_root(image) == tmp_path.resolve()  # a file starts at its folder
    assert synthetic_root(deep / "d", levels=3) is None  # four levels up: too far
    assert synthetic_root(deep / "d", levels=None) == tmp_path.resolve()


def test_synthetic_root_is_none_without_marker(tmp_path):
    assert synthetic_root(tmp_path) is None


def test_read_csv_strips_header_and_bom(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeff a , b\n1,2\n3\n".encode())
    header, rows = read_csv(path)
    assert header == ["a", "b"]
    assert rows[0] == {"a": "1", "b": "2"}
    assert rows[1]["b"] is None  # a short row: the caller decides what that means


def test_read_csv_reports_unreadable_files(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(DataError, match="cannot read"):
        read_csv(path)
    with pytest.raises(DataError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")
