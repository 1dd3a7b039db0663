"""Fixtures the Ray test modules share: the tiny test model and a folder of cells and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_support import build_onnx, gray_cell, write_bad_files, write_bmp, write_flagged_files


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("cluster-model") / "model.onnx")


@pytest.fixture(scope="module")
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cells at the module's ``LEVELS`` (near and far from the threshold), flagged files and every kind of bad file."""
    root = tmp_path_factory.mktemp("cluster-cells")
    for i, level in enumerate(request.module.LEVELS):
        write_bmp(root / f"cell_{i:02d}.bmp", gray_cell(level, seed=i))
    write_flagged_files(root)
    write_bad_files(root)
    return root
