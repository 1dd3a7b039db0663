"""What the command line loads and says before and around the work: imports, version, logging, extras.

The import and extra checks run in fresh interpreters (subprocesses): ``sys.modules`` of the test
process already holds torch and the engines.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runtime_support import build_onnx, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.runtime import registry
from edgeleuk.runtime.cuda import CudaBackend

HEAVY = ("torch", "onnxruntime", "openvino", "ray", "nncf", "scipy", "matplotlib")
# Torch-free but not needed to parse: each command imports these when it runs (edgeleuk.cli's docstring).
LAZY = ("edgeleuk.bench.runner", "edgeleuk.serving.server", "edgeleuk.cluster.predict", "edgeleuk.synth.dataset")


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)


def _edgeleuk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeleuk", *args], capture_output=True, text=True, timeout=300,
                          check=False, cwd=cwd)


def test_help_loads_no_engine_and_no_training_library() -> None:
    proc = _python(f"""
        import sys
        from typer.testing import CliRunner
        from edgeleuk.cli import app
        for args in (["--help"], ["predict", "--help"]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0 and "Usage" in result.output, result.output
        print(sorted(m for m in {HEAVY + LAZY!r} if m in sys.modules))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_version_flag() -> None:
    from edgeleuk import __version__

    proc = _edgeleuk("--version")
    assert proc.returncode == 0 and proc.stdout == f"edgeleuk {__version__}\n" and proc.stderr == ""


@pytest.fixture()
def folder_and_model(tmp_path: Path) -> tuple[Path, Path]:
    write_bmp(tmp_path / "cells" / "1.bmp", gray_cell(200, size=32))
    return tmp_path / "cells", build_onnx(tmp_path / "m.onnx")


def test_quiet_logs_only_warnings_and_still_prints_the_summary(folder_and_model, tmp_path: Path) -> None:
    folder, model = folder_and_model
    args = ("predict", str(folder), "-m", str(model), "--out", str(tmp_path / "p.csv"), "--backend", "cpu")
    loud, quiet = _edgeleuk(*args), _edgeleuk("--quiet", *args)
    assert loud.returncode == quiet.returncode == 0, (loud.stderr, quiet.stderr)
    assert "INFO edgeleuk" in loud.stderr
    assert quiet.stderr == ""  # no INFO lines, no progress bar
    untimed = [re.sub(r" in [0-9.]+ s \([^)]*\)", "", p.stdout) for p in (loud, quiet)]
    assert untimed[0] == untimed[1] and "wrote " in untimed[1]  # the same summary, timing aside
    both = _edgeleuk("-q", "-v", *args)
    assert both.returncode == 2 and "exclude each other" in both.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_library_chatter_only_with_verbose(verbose: bool) -> None:
    """NNCF's INFO lines, torch's log and Python warnings: only with --verbose.

    NNCF and torch set their loggers' levels when imported, after the command line started.
    """
    if importlib.util.find_spec("nncf") is None:  # not importorskip: importing nncf here changes this process
        pytest.skip("nncf (the training extra) is not installed")
    proc = _python("""
        import logging, sys, warnings
        from typer.testing import CliRunner
        from edgeleuk.cli import app
        args = ["-v"] if sys.argv[1] == "1" else []
        assert CliRunner().invoke(app, [*args, "recipes"]).exit_code == 0
        import nncf  # as an INT8 export does, long after the command line was parsed
        from nncf.common.logging import nncf_logger
        nncf_logger.info("NNCF CHATTER")
        logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found: TORCH LOG CHATTER")
        warnings.warn_explicit("CUDA initialization: TORCH CHATTER", UserWarning, "x.py", 1, module="torch.cuda")
        warnings.warn_explicit("OWN WARNING", UserWarning, "y.py", 1, module="edgeleuk.something")
    """, "1" if verbose else "0")
    assert proc.returncode == 0, proc.stderr
    both = proc.stdout + proc.stderr
    assert ("NNCF CHATTER" in both) is verbose
    assert ("TORCH CHATTER" in both) is verbose
    assert ("TORCH LOG CHATTER" in both) is verbose
    assert "OWN WARNING" in both


@pytest.mark.parametrize("gpu", [False, True])
def test_gpu_install_advice_only_where_a_gpu_is_seen(
    folder_and_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, gpu: bool
) -> None:
    folder, model = folder_and_model
    advice = "onnxruntime-gpu is not installed: pip install 'edgeleuk[gpu]'"
    monkeypatch.setattr(CudaBackend, "availability", classmethod(lambda cls: advice))
    monkeypatch.setattr(registry, "gpu_visible", lambda: gpu)
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, ["predict", str(folder), "-m", str(model), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    logged = "\n".join(r.getMessage() for r in caplog.records) + result.output
    assert ("edgeleuk[gpu]" in logged) is gpu
    explicit = CliRunner().invoke(app, ["predict", str(folder), "-m", str(model), "--backend", "cuda"])
    assert explicit.exit_code == 2 and "edgeleuk[gpu]" in explicit.stderr  # asked for: always the advice


TORCH_COMMANDS = {
    "train": ["train", "{tmp}/data", "--out", "{tmp}/run"],
    "sweep": ["sweep", "{tmp}/data", "--out", "{tmp}/sweep", "--seeds", "1"],
    "compare": ["compare", "{tmp}/sweep"],
    "export": ["export", "--checkpoint", "{tmp}/best.pt", "--out", "{tmp}/m.onnx"],
    "import-checkpoint": ["import-checkpoint", "{tmp}/best.pt", "{tmp}/ckpt.pt"],
    "demo": ["demo", "--out", "{tmp}/demo"],
    "info": ["info", "{tmp}/best.pt"],
}


def test_torch_commands_on_a_torch_free_install_name_the_extra(tmp_path: Path) -> None:
    (tmp_path / "best.pt").write_bytes(b"not read: torch is missing first")
    proc = _python("""
        import json, sys
        for name in ("torch", "torchvision", "timm", "nncf", "scipy", "matplotlib"):
            sys.modules[name] = None  # a torch-free install, without the training extra: importing raises
        from typer.testing import CliRunner
        from edgeleuk.cli import app
        results = {}
        for name, args in json.loads(sys.argv[1]).items():
            r = CliRunner().invoke(app, args)
            results[name] = [r.exit_code, r.stderr, repr(r.exception) if r.exit_code not in (0, 2) else ""]
        print(json.dumps(results))
    """, json.dumps({k: [a.format(tmp=tmp_path) for a in v] for k, v in TORCH_COMMANDS.items()}))
    assert proc.returncode == 0, proc.stderr
    for name, (code, stderr, exc) in json.loads(proc.stdout).items():
        assert code == 2, (name, stderr, exc)
        assert f"error: edgeleuk {name} needs the training extra: pip install 'edgeleuk[train]'" in stderr, name
        assert "Traceback" not in stderr and "ModuleNotFoundError" not in stderr


def test_info_of_an_exported_model_needs_no_torch(tmp_path: Path) -> None:
    model = build_onnx(tmp_path / "m.onnx")
    proc = _python("""
        import sys
        sys.modules["torch"] = None
        from typer.testing import CliRunner
        from edgeleuk.cli import app
        r = CliRunner().invoke(app, ["info", "--json", "-m", sys.argv[1]])
        print(r.exit_code)
    """, str(model))
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr
