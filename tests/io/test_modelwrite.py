"""Staged output: an IR's .xml never sits beside another .bin; a folder model is swapped whole; failed moves undo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeleuk.io import modelwrite as staging
from edgeleuk.io.modelwrite import replace_atomically


def _write_pair(folder: Path, tag: str) -> None:
    (folder / "m.xml").write_text(f"xml {tag}")
    (folder / "m.bin").write_text(f"bin {tag}")


def _visible(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


def test_pair_replaces_old_pair_and_leaves_no_stage(tmp_path: Path) -> None:
    _write_pair(tmp_path, "old")
    with replace_atomically(tmp_path / "m.xml") as stage:
        _write_pair(stage, "new")
    assert _visible(tmp_path) == {"m.xml": "xml new", "m.bin": "bin new"}
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_first_export_and_onnx(tmp_path: Path) -> None:
    with replace_atomically(tmp_path / "m.xml") as stage:
        _write_pair(stage, "new")
    with replace_atomically(tmp_path / "m.onnx") as stage:
        (stage / "m.onnx").write_text("onnx")
    assert _visible(tmp_path) == {"m.xml": "xml new", "m.bin": "bin new", "m.onnx": "onnx"}


def test_every_intermediate_state_is_consistent_or_has_no_xml(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Record what a reader would see after each rename, as if the process died right there."""
    _write_pair(tmp_path, "old")
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        seen.append(_visible(tmp_path))

    monkeypatch.setattr(staging.os, "replace", replace)
    with replace_atomically(tmp_path / "m.xml") as stage:
        _write_pair(stage, "new")
    assert len(seen) == 4
    for state in seen:
        if "m.xml" in state:
            tag = state["m.xml"].split()[1]
            assert state.get("m.bin") == f"bin {tag}", state
    assert seen[-1] == {"m.xml": "xml new", "m.bin": "bin new"}


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_failed_move_restores_the_old_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    _write_pair(tmp_path, "old")
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError("disk trouble")
        real_replace(src, dst)

    monkeypatch.setattr(staging.os, "replace", replace)
    with pytest.raises(OSError, match="disk trouble"), replace_atomically(tmp_path / "m.xml") as stage:
        _write_pair(stage, "new")
    assert _visible(tmp_path) == {"m.xml": "xml old", "m.bin": "bin old"}
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_failed_first_move_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def replace(src, dst):
        raise OSError("read-only")

    monkeypatch.setattr(staging.os, "replace", replace)
    with pytest.raises(OSError), replace_atomically(tmp_path / "m.xml") as stage:
        _write_pair(stage, "new")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def folder_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder format (like a CoreML .mlpackage), in the table for this test only."""
    from edgeleuk.io.formats import FORMATS, ModelFormat

    fmt = ModelFormat("pkgtest", ".pkgtest", "Package", read_metadata=dict, write_metadata=print, layout="folder")
    monkeypatch.setitem(FORMATS, fmt.name, fmt)


def _write_package(folder: Path, tag: str) -> None:
    folder.mkdir()
    (folder / "weights.bin").write_text(f"weights {tag}")
    (folder / "meta.json").write_text(f"meta {tag}")


@pytest.mark.usefixtures("folder_format")
def test_a_folder_model_is_replaced_whole(tmp_path: Path) -> None:
    _write_package(tmp_path / "m.pkgtest", "old")
    with replace_atomically(tmp_path / "m.pkgtest") as stage:
        _write_package(stage / "m.pkgtest", "new")
    assert _visible(tmp_path / "m.pkgtest") == {"weights.bin": "weights new", "meta.json": "meta new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pkgtest"]


@pytest.mark.usefixtures("folder_format")
@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_failed_folder_swap_or_a_full_disk_keeps_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    _write_package(tmp_path / "m.pkgtest", "old")
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(staging.os, "replace", replace)
    with pytest.raises(OSError, match="No space"), replace_atomically(tmp_path / "m.pkgtest") as stage:
        _write_package(stage / "m.pkgtest", "new")
    assert _visible(tmp_path / "m.pkgtest") == {"weights.bin": "weights old", "meta.json": "meta old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pkgtest"]


@pytest.mark.usefixtures("folder_format")
def test_a_writer_that_fails_halfway_leaves_the_old_folder_and_no_stage(tmp_path: Path) -> None:
    _write_package(tmp_path / "m.pkgtest", "old")
    with pytest.raises(OSError, match="No space"), replace_atomically(tmp_path / "m.pkgtest") as stage:
        (stage / "m.pkgtest").mkdir()
        raise OSError(28, "No space left on device")
    assert _visible(tmp_path / "m.pkgtest") == {"weights.bin": "weights old", "meta.json": "meta old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pkgtest"]


def test_a_rewritten_model_keeps_its_mode_and_a_copy_takes_the_source_s(tmp_path: Path) -> None:
    from runtime_support import build_onnx

    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.io.modelwrite import write_model_with_meta

    model = build_onnx(tmp_path / "private.onnx")
    os.chmod(model, 0o600)
    write_model_with_meta(model, model, ModelMeta(arch="seresnext_tiny", threshold=0.3))  # calibrate in place
    assert model.stat().st_mode & 0o777 == 0o600
    copy = write_model_with_meta(model, tmp_path / "copy.onnx", ModelMeta(arch="seresnext_tiny", threshold=0.4))
    assert copy.stat().st_mode & 0o777 == 0o600
    shared = tmp_path / "shared.onnx"
    shared.write_bytes(b"old")
    os.chmod(shared, 0o640)
    write_model_with_meta(model, shared, ModelMeta(arch="seresnext_tiny", threshold=0.2))
    assert shared.stat().st_mode & 0o777 == 0o640


def test_a_model_output_that_is_a_link_is_refused(tmp_path: Path) -> None:
    from runtime_support import build_onnx

    from edgeleuk.core.errors import UsageError
    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.io.modelwrite import write_model_with_meta

    model = build_onnx(tmp_path / "m.onnx")
    link = tmp_path / "out.onnx"
    link.symlink_to(model)
    with pytest.raises(UsageError, match="symbolic link"):
        write_model_with_meta(model, link, ModelMeta(arch="seresnext_tiny", threshold=0.3))
    assert link.is_symlink()
