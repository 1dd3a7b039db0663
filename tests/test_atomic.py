import pytest

from edgeleuk.atomic import atomic_open, atomic_path, atomic_write_text


def test_success_replaces_destination(tmp_path):
    dest = tmp_path / "out.csv"
    dest.write_text("old")
    atomic_write_text(dest, "new")
    assert dest.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "out.csv"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(dest) as fh:
        fh.write("half")
        raise RuntimeError("crash mid-write")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_failure_without_previous_file_leaves_nothing(tmp_path):
    dest = tmp_path / "sub" / "model.onnx"
    with pytest.raises(ValueError), atomic_path(dest) as tmp:
        assert tmp.suffix == ".onnx" and tmp.parent == dest.parent
        tmp.write_bytes(b"x")
        raise ValueError
    assert list(dest.parent.iterdir()) == []


def test_result_gets_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        dest = tmp_path / "report.html"
        atomic_write_text(dest, "x")
        assert dest.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)
