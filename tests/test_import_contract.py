"""The import contracts in pyproject.toml bite: a torch import, an upward import or a cycle breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, which a test may damage."""
    if not LINT_IMPORTS.is_file():
        pytest.skip("lint-imports is not installed (pip install -e '.[dev]')")
    shutil.copytree(REPO / "edgeleuk", tmp_path / "edgeleuk", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: grimp must read the copy, not the editable install of the real tree.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True)


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_untouched_copy_keeps_the_contracts(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_in_the_runtime_breaks_the_contract(tree: Path) -> None:
    _append(tree / "edgeleuk" / "runtime" / "base.py", "import torch  # noqa")
    result = _lint(tree)
    assert result.returncode != 0
    assert "edgeleuk.runtime is not allowed to import torch" in result.stdout
    assert "edgeleuk.runtime.base -> torch" in result.stdout


def test_lazy_training_import_in_workflow_breaks_the_contract(tree: Path) -> None:
    _append(tree / "edgeleuk" / "workflow" / "threshold.py",
            "def _later():\n    from edgeleuk.training.loop import train  # noqa")
    result = _lint(tree)
    assert result.returncode != 0
    assert "edgeleuk.workflow is not allowed to import edgeleuk.training" in result.stdout
    assert "edgeleuk.workflow.threshold -> edgeleuk.training.loop" in result.stdout


def test_a_cycle_breaks_the_contract(tree: Path) -> None:
    _append(tree / "edgeleuk" / "io" / "files.py", "import edgeleuk.io.data  # noqa")  # data imports files
    result = _lint(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in edgeleuk" in result.stdout


@pytest.mark.parametrize(("lower", "higher"), [
    (("core", "meta.py"), "edgeleuk.io.files"),  # core under io
    (("io", "files.py"), "edgeleuk.runtime.registry"),  # file I/O under the runtime
    (("runtime", "pipeline.py"), "edgeleuk.workflow.outputs"),  # the runtime under the workflow
])
def test_a_lower_layer_importing_a_higher_one_breaks_the_layers_contract(tree: Path, lower, higher) -> None:
    folder, module = lower
    _append(tree / "edgeleuk" / folder / module, f"def _later():\n    import {higher}  # noqa")  # lazy counts too
    result = _lint(tree)
    assert result.returncode != 0
    assert "Layers: each imports only those below it" in result.stdout and "BROKEN" in result.stdout
    assert f"edgeleuk.{folder}.{module.removesuffix('.py')} -> {higher}" in result.stdout
