"""Fixtures the command-line tests share: a tiny brightness model and a small labelled set."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_support import build_onnx
from workflow_support import write_cell


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The brightness model of ``runtime_support`` as an exported ``.onnx``."""
    return build_onnx(tmp_path_factory.mktemp("model") / "m.onnx")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """C-NMC training layout, 6 ALL (bright) and 6 HEM (dark) cells: enough to calibrate on."""
    root = tmp_path_factory.mktemp("labelled")
    for i in range(6):
        write_cell(root / "training_data" / "fold_0" / "all" / f"UID_{i % 2 + 1}_{i}_1_all.bmp", 150 + 10 * i)
        write_cell(root / "training_data" / "fold_0" / "hem" / f"UID_H{i % 2 + 1}_{i}_1_hem.bmp", 60 + 10 * i)
    return root
