"""Commands that behave alike: --model/-m everywhere, deprecated spellings with a note, --out help.

Everything runs the CLI in-process on the tiny hand-built model (no torch, no Ray started).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
from runtime_support import gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import DEFAULT_OUT, app
from edgeleuk.workflow import predict as predict_mod

runner = CliRunner()
NOTE = "note: the positional MODEL is deprecated; use --model/-m"


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` past its checks would start Ray and serve until Ctrl-C: fail at once instead."""
    from edgeleuk.serving import server

    monkeypatch.setattr(server, "import_serve", lambda: pytest.fail("serve got past its checks and started Ray"))


def _cells(folder: Path) -> Path:
    write_bmp(folder / "1.bmp", gray_cell(200))
    return folder


def _model_commands(tmp: Path) -> dict[str, list[str]]:
    """Each command that takes a model file, with every other argument it needs (the model comes last)."""
    cells = _cells(tmp / "cells")
    rows = tmp / "rows.csv"
    rows.write_text("path,status,error,prob_all,label,subject,adjustment\n1.bmp,ok,,0.9,all,1,\n", encoding="utf-8")
    return {
        "predict": ["predict", str(cells), "--out", str(tmp / "p.csv")],
        "watch": ["watch", str(cells), "--out", str(tmp / "w.csv")],
        "bench": ["bench", "--quick"],
        "info": ["info"],
        "calibrate": ["calibrate", "--data", str(cells), "--out", str(tmp / "c.onnx")],
        "serve": ["serve"],
        "serving-repo": ["serving-repo", str(tmp / "repo")],
        "card": ["card"],
        "report": ["report", str(rows), "--out", str(tmp / "r.html"), "--images", str(cells)],
        "cells": ["cells", str(cells), "--out", str(tmp / "crops")],
    }


MODEL_COMMANDS = ("predict", "watch", "bench", "info", "calibrate", "serve", "serving-repo", "card", "report",
                  "cells")


@pytest.mark.parametrize("flag", ["--model", "-m"])
@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_takes_model_and_m(command: str, flag: str, tmp_path: Path) -> None:
    """The flag parses on every command and reaches the model check: a missing file is exit 2, named."""
    missing = tmp_path / "nope.onnx"
    result = runner.invoke(app, [*_model_commands(tmp_path)[command], flag, str(missing)])
    assert result.exit_code == 2, result.output
    assert "not found" in result.output and str(missing) in result.output, result.output
    assert "No such option" not in result.output and "deprecated" not in result.output


def test_the_model_commands_are_all_listed() -> None:
    """A new command with a model parameter must join MODEL_COMMANDS (and so the test above)."""
    group = typer.main.get_command(app)
    taking = {name for name, cmd in group.commands.items() if any(p.name == "model" for p in cmd.params)}
    assert taking == set(MODEL_COMMANDS)
    for name in taking:
        opts = next(p for p in group.commands[name].params if p.name == "model").opts
        assert {"--model", "-m"} <= set(opts), (name, opts)


def test_predict_info_calibrate_happy_paths_with_m(model: Path, labelled: Path, tmp_path: Path) -> None:
    cells = _cells(tmp_path / "cells")
    predicted = runner.invoke(app, ["predict", str(cells), "-m", str(model), "--out", str(tmp_path / "p.csv")])
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "p.csv").read_text().splitlines()[1].startswith("1.bmp,ok,")
    described = runner.invoke(app, ["info", "-m", str(model)])
    assert described.exit_code == 0 and "ONNX model" in described.stdout
    out = tmp_path / "c.onnx"
    calibrated = runner.invoke(app, ["calibrate", "-m", str(model), "--data", str(labelled), "--out", str(out),
                                     "--backend", "cpu", "--allow-small"])
    assert calibrated.exit_code == 0, calibrated.output
    assert out.is_file() and "calibrated" in calibrated.stdout and "deprecated" not in calibrated.output


@pytest.mark.parametrize("command", ["info", "calibrate"])
def test_deprecated_positional_model_still_works_with_a_note(
    command: str, model: Path, labelled: Path, tmp_path: Path
) -> None:
    extra = {"info": [], "calibrate": ["--data", str(labelled), "--out", str(tmp_path / "c.onnx"), "--backend", "cpu",
                                   "--allow-small"]}
    result = runner.invoke(app, [command, str(model), *extra[command]])
    assert result.exit_code == 0, result.output
    assert NOTE in result.stderr and NOTE not in result.stdout


def test_serve_keeps_the_positional_model_with_a_note(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nope.onnx")])  # refused before Ray starts
    assert result.exit_code == 2 and NOTE in result.stderr and "model file not found" in result.stderr


@pytest.mark.parametrize("command", ["info", "calibrate", "serve"])
def test_positional_and_model_together_is_a_usage_error(command: str, model: Path, tmp_path: Path) -> None:
    extra = {"info": [], "serve": [], "calibrate": ["--data", str(tmp_path), "--out", str(tmp_path / "c.onnx")]}
    result = runner.invoke(app, [command, str(model), "--model", str(model), *extra[command]])
    assert result.exit_code == 2
    assert "give the model once" in result.stderr


def test_a_model_command_without_a_model_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 2 and "missing --model/-m" in result.stderr


def test_export_takes_checkpoint_and_data_keeping_the_old_spellings(tmp_path: Path) -> None:
    missing, out = tmp_path / "nope.pt", str(tmp_path / "m.onnx")
    new = runner.invoke(app, ["export", "--checkpoint", str(missing), "--data", str(tmp_path), "--out", out])
    assert new.exit_code == 2 and "not found" in new.stderr and "deprecated" not in new.stderr
    old = runner.invoke(app, ["export", str(missing), "--calib", str(tmp_path), "--out", out])
    assert old.exit_code == 2 and "not found" in old.stderr
    assert "note: the positional CKPT is deprecated; use --checkpoint" in old.stderr
    assert "note: --calib is deprecated; use --data" in old.stderr
    both = runner.invoke(app, ["export", "--checkpoint", str(missing), "--data", "a", "--calib", "b"])
    assert both.exit_code == 2 and "--data" in both.stderr
    assert "--calib" not in runner.invoke(app, ["export", "--help"]).stdout  # hidden: --data is the name


def _out_params() -> list[tuple[str, str, str]]:
    """``(command, option, help)`` of every parameter that names where output goes."""
    group = typer.main.get_command(app)
    found = []
    for name, cmd in group.commands.items():
        for p in cmd.params:
            if p.name in ("out", "json_out"):
                found.append((name, p.opts[0], p.help or ""))
    return found


FOLDER_OUT = {"train", "sweep", "compare", "demo", "serving-repo", "synth", "cells"}


def test_every_out_help_says_file_or_folder() -> None:
    params = _out_params()
    assert {c for c, _, _ in params} >= {"predict", "watch", "calibrate", "export", "report", "bench", *FOLDER_OUT}
    for command, opt, text in params:
        want = "Folder" if command in FOLDER_OUT else "File"
        assert text.startswith(want), (command, opt, text)


def test_predictions_default_is_declared_once() -> None:
    assert DEFAULT_OUT is predict_mod.DEFAULT_OUT
    group = typer.main.get_command(app)
    for command in ("predict", "watch"):
        out = next(p for p in group.commands[command].params if p.name == "out")
        assert out.default is predict_mod.DEFAULT_OUT, command  # the same object: not a second literal


def test_version_prints_the_package_version() -> None:
    from edgeleuk import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"edgeleuk {__version__}\n"


def test_info_json_for_a_model(model: Path) -> None:
    result = runner.invoke(app, ["info", "--json", "-m", str(model)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["path"] == str(model) and record["kind"] == "model" and record["format"] == "onnx"
    assert record["size_bytes"] == model.stat().st_size
    assert record["meta"]["arch"] == "seresnext_tiny" and record["meta"]["threshold"] == 0.5
    assert record["export"]["precision"] == "fp32"


def test_info_json_of_a_missing_model_is_exit_2_and_no_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", "--json", "-m", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2 and result.stdout == "" and "model file not found" in result.stderr


def test_info_of_a_checkpoint_by_flag_suffix_and_json(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    renamed = tmp_path / "best.ckpt"  # --checkpoint says what the file is, whatever its suffix
    renamed.write_bytes(tiny_checkpoint.read_bytes())
    by_flag = runner.invoke(app, ["info", "--checkpoint", str(renamed)])
    by_suffix = runner.invoke(app, ["info", "-m", str(tiny_checkpoint)])
    for result in (by_flag, by_suffix):
        assert result.exit_code == 0, result.output
        assert "edgeleuk checkpoint (PyTorch)" in result.stdout
    assert runner.invoke(app, ["info", "-m", str(renamed)]).exit_code == 2  # not a model format
    record = json.loads(runner.invoke(app, ["info", "--json", "--checkpoint", str(tiny_checkpoint)]).stdout)
    assert record["kind"] == "checkpoint" and record["format"] == "pytorch" and record["export"] is None
    assert record["meta"]["arch"] == "seresnext_tiny" and record["tensors"] > 0
