"""Fixtures shared by the workflow tests: the brightness test model and the fake segmentation.

Both are SYNTHETIC stand-ins (tests/workflow_support.py, tests/field_support.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from field_support import fake_find_cells
from workflow_support import build_brightness_onnx

from edgeleuk.workflow import fieldrows


@pytest.fixture(scope="session")
def bright_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default brightness model, built once: shared and read-only (copy it before changing it).

    Checked at the session's end: the same bytes, and nothing written beside it.
    """
    path = build_brightness_onnx(tmp_path_factory.mktemp("bright-model") / "bright.onnx")
    before = path.read_bytes()
    yield path
    assert path.read_bytes() == before, "a test changed the shared brightness model"
    assert sorted(path.parent.iterdir()) == [path], "a test wrote beside the shared brightness model"


@pytest.fixture
def squares_are_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segment fields with the fake that takes each drawn square for a white cell."""
    monkeypatch.setattr(fieldrows.fieldlib, "find_cells", fake_find_cells)
