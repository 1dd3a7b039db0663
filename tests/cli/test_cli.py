"""The command line as a new user meets it: help, synth, and exit codes for mistakes."""

import subprocess
import sys

from typer.testing import CliRunner

from edgeleuk.cli import app

runner = CliRunner()


def _edgeleuk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeleuk", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_help_lists_every_command():
    proc = _edgeleuk("--help")
    assert proc.returncode == 0, proc.stderr
    for cmd in ("synth", "train", "sweep", "compare", "export", "info", "predict", "bench", "demo",
                "calibrate", "watch", "report", "import-checkpoint"):
        assert cmd in proc.stdout


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    # No command is a usage error (exit 2, as for any bad input); the help says what to type.
    assert "Usage" in result.output and "COMMAND" in result.output and result.exit_code == 2


def test_synth_then_help_as_a_new_user(tmp_path):
    proc = _edgeleuk("synth", str(tmp_path / "x"), "--subjects", "6", "--cells-per-subject", "3")
    assert proc.returncode == 0, proc.stderr
    assert "SYNTHETIC" in proc.stdout.upper()
    assert list((tmp_path / "x").rglob("*.bmp"))


def test_missing_checkpoint_is_a_usage_error(tmp_path):
    out = str(tmp_path / "m.onnx")
    result = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", out])
    assert result.exit_code == 2
    assert "not found" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_bad_enum_choice_is_rejected():
    result = runner.invoke(app, ["predict", ".", "--model", "m.onnx", "--backend", "tpu"])
    assert result.exit_code == 2


def test_errors_go_to_stderr_with_the_usage_exit_code(tmp_path):
    proc = _edgeleuk("info", "--model", str(tmp_path / "nope.onnx"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: model file not found")


def test_unknown_profile_name_lists_the_shipped_ones(tmp_path):
    result = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "x.pt"), "--profile", "no-such-profile"])
    assert result.exit_code == 2
    assert "no-such-profile" in result.output and "cpu-fp32" in result.output


def test_the_command_line_loads_no_heavy_engine_until_a_command_needs_it() -> None:
    """The CLI imports torch, SciPy, Ray and the engines only inside the commands that use them."""
    code = (
        "import sys, edgeleuk.cli\n"
        "heavy = ('torch', 'timm', 'scipy', 'matplotlib', 'ray', 'onnxruntime', 'openvino', 'nncf')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
