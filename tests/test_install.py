"""A non-editable install carries its recipes and export profiles: train and export work from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding a wheel built from a copy of the source tree.

    The copy keeps the build from writing into the checkout, and holds only what
    a source distribution would: the package, pyproject.toml and README.md, so a
    config file the package forgot to declare is missing here too. The heavy
    dependencies (torch, onnxruntime, ...) come from this test's own environment
    through a ``.pth`` line; that path is searched after the venv's own
    site-packages, and ``.pth`` files inside it are not run, so this checkout's
    editable install cannot shadow the wheel.
    """
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    shutil.copytree(REPO / "edgeleuk", src / "edgeleuk", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(root / "wheels"), str(src)], cwd=root)
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=root).stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    wheel = next((root / "wheels").glob("edgeleuk-*.whl"))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
          str(wheel)], cwd=root)
    return env_dir


@pytest.mark.slow
def test_wheel_trains_smoke_and_exports_with_the_default_profile(installed: Path, synth_root: Path,
                                                                 tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"  # outside the repository: no train/ or export/ folder to fall back on
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([str(installed / "bin" / "python"), "-c", "import edgeleuk; print(edgeleuk.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout
    edgeleuk = str(installed / "bin" / "edgeleuk")
    trained = _run([edgeleuk, "train", str(synth_root), "--recipe", "smoke", "--out", "run"], work, env)
    assert (work / "run" / "best.pt").is_file(), trained.stdout
    exported = _run([edgeleuk, "export", "run/best.pt", "--out", "model.onnx", "--calib", str(synth_root)],
                    work, env)
    assert "cpu-fp32" in exported.stdout and (work / "model.onnx").is_file()
    listed = _run([edgeleuk, "recipes"], work, env)
    assert "paper" in listed.stdout and "smoke" in listed.stdout
