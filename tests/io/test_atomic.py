import pytest

from edgeleuk.io.atomic import atomic_open, atomic_path, atomic_write_text


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


def test_rewrite_keeps_owner_only_permissions(tmp_path):
    import os

    dest = tmp_path / "predictions.csv"
    dest.write_text("old")
    os.chmod(dest, 0o600)
    atomic_write_text(dest, "new")
    assert dest.read_text() == "new"
    assert dest.stat().st_mode & 0o777 == 0o600


def test_process_umask_is_never_changed(tmp_path, monkeypatch):
    import os

    from edgeleuk.io.atomic import current_umask

    umask = os.umask(0o027)
    try:
        # Another thread creating files meanwhile must never see a zero umask: no os.umask call at all.
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("atomic.py changed the process umask"))
        assert current_umask() == 0o027
        dest = tmp_path / "new.txt"
        atomic_write_text(dest, "x")
        assert dest.stat().st_mode & 0o777 == 0o640
    finally:
        monkeypatch.undo()
        os.umask(umask)


def _fsynced(monkeypatch):
    """Record the path of every descriptor passed to os.fsync (Linux /proc)."""
    import os

    seen = []
    real = os.fsync

    def spy(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_atomic_path_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    seen = _fsynced(monkeypatch)
    dest = tmp_path / "a.bin"
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"written by a library that never fsyncs")
        tmp_name = str(tmp)
    assert tmp_name in seen and str(tmp_path) in seen
    assert seen.index(tmp_name) < seen.index(str(tmp_path))  # data first, then the rename


def test_cnmc_zip_is_fsynced(tmp_path, monkeypatch):
    from edgeleuk.runtime.classifier import Prediction
    from edgeleuk.workflow.outputs import ResultRow, write_cnmc

    seen = _fsynced(monkeypatch)
    rows = [
        ResultRow(f"{k}.bmp", Prediction(path=None, status="ok", prob_all=0.9, label="all")) for k in (1, 2)
    ]
    write_cnmc(tmp_path / "s.zip", rows, "all")
    assert any(p.startswith(str(tmp_path / ".s.zip.")) for p in seen) and str(tmp_path) in seen


@pytest.mark.parametrize("kind", ["link to /dev/null", "link to a file", "fifo", "device"])
def test_non_regular_targets_are_refused_and_left_alone(tmp_path, kind):
    import os
    import stat

    from edgeleuk.core.errors import UsageError

    dest = tmp_path / "out.csv"
    target = tmp_path / "elsewhere.csv"
    if kind == "link to /dev/null":
        dest.symlink_to("/dev/null")
    elif kind == "link to a file":
        target.write_text("keep")
        dest.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(dest)
    else:  # a node of its own, never a system one: as root, a rename would replace the device itself
        try:
            os.mknod(dest, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except OSError:
            pytest.skip("cannot create a device node here (needs root with CAP_MKNOD)")
    with pytest.raises(UsageError, match="symbolic link|device, pipe or socket") as refused:
        atomic_write_text(dest, "rows")
    assert refused.value.exit_code == 2
    if kind.startswith("link"):
        assert dest.is_symlink() and os.readlink(dest) in ("/dev/null", str(target))
    if kind == "link to a file":
        assert target.read_text() == "keep"
    if kind == "device":
        assert stat.S_ISCHR(os.lstat(dest).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.csv"] + (["elsewhere.csv"] if kind == "link to a file" else [])
    )


def test_predict_refuses_a_link_as_out_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "1.bmp").write_bytes(b"BM")
    out = tmp_path / "out.csv"
    out.symlink_to("/dev/null")
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "cells"), "-m", str(tmp_path / "missing.onnx"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert out.is_symlink()
