"""Model-file metadata: ONNX metadata_props, IR rt_info, checkpoints, and ``edgeleuk info``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from runtime_support import EXPORT_INFO, build_ir, build_onnx, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import MAX_METADATA_CHARS, ModelMeta, Preprocess
from edgeleuk.info import describe_model_file
from edgeleuk.io import formats as modelfile
from edgeleuk.io.modelfile import parse_metadata, read_model_meta

META = ModelMeta(
    arch="seresnext_tiny",
    preprocess=Preprocess(rotations=4),
    threshold=0.37,
    threshold_source="calibrated",
    recipe="unit",
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("meta")
    onnx_path = build_onnx(folder / "m.onnx", META)
    return {"onnx": onnx_path, "ir": build_ir(onnx_path, folder / "m.xml")}


@pytest.mark.parametrize("kind", ["onnx", "ir"])
def test_read_model_meta_round_trips(models: dict[str, Path], kind: str) -> None:
    meta, export = read_model_meta(models[kind])
    assert meta == META
    assert export == EXPORT_INFO


def test_onnx_metadata_without_the_onnx_package(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    """The runtime extra has onnxruntime but maybe not onnx: metadata still reads."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    meta, _ = read_model_meta(models["onnx"])
    assert meta.threshold == pytest.approx(0.37)


def test_model_without_edgeleuk_metadata_is_refused(tmp_path: Path) -> None:
    path = build_onnx(tmp_path / "foreign.onnx", with_meta=False)
    with pytest.raises(UsageError, match="not exported by edgeleuk"):
        read_model_meta(path)


def test_malformed_metadata_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="malformed"):
        parse_metadata({"edgeleuk.meta": json.dumps({"colour": "red"})}, "x.onnx")
    with pytest.raises(UsageError, match="malformed"):
        parse_metadata({"edgeleuk.meta": "{not json"}, "x.onnx")


def test_corrupt_model_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UsageError, match="cannot read model file"):
        read_model_meta(bad)


def test_ir_reader_accepts_onnx_style_rt_info(models: dict[str, Path]) -> None:
    """OpenVINO's ONNX reader files metadata_props under rt_info['framework']."""
    import openvino as ov

    raw = modelfile.ir_metadata(ov.Core().read_model(str(models["onnx"])))
    assert ModelMeta.from_json(raw["edgeleuk.meta"]) == META


def test_describe_shows_contract_threshold_and_export(models: dict[str, Path]) -> None:
    text = describe_model_file(models["ir"])
    assert "OpenVINO IR model" in text
    assert "uint8 RGB [N, 450, 450, 3]" in text
    assert "rotations:     4 (0, 90, 180, 270 degrees)" in text
    assert "threshold:     0.37 (calibrated)" in text
    assert "precision: fp32" in text


def test_info_command(models: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["info", "--model", str(models["onnx"])])
    assert ok.exit_code == 0, ok.output
    assert "ONNX model" in ok.stdout and "arch:          seresnext_tiny" in ok.stdout
    missing = runner.invoke(app, ["info", "-m", str(tmp_path / "none.onnx")])
    assert missing.exit_code == 2
    assert "model file not found" in missing.stderr


def test_info_on_a_checkpoint(tiny_checkpoint: Path) -> None:
    text = describe_model_file(tiny_checkpoint)
    assert "edgeleuk checkpoint (PyTorch)" in text
    assert "arch:          seresnext_tiny" in text


def test_info_shows_control_characters_in_metadata_escaped(tmp_path: Path) -> None:
    hostile = META.replace(arch="tiny\x1b[2J\nthreshold:     0.99 (forged)", recipe="r\x1b]0;title\x07")
    path = build_onnx(tmp_path / "m.onnx", hostile)
    text = describe_model_file(path)
    assert "\x1b" not in text and "\x07" not in text and "(forged)" in text
    assert len(text.splitlines()) == len(describe_model_file(build_onnx(tmp_path / "plain.onnx", META)).splitlines())
    assert "arch:          tiny\\x1b[2J\\nthreshold:     0.99 (forged)" in text.splitlines()
    shown = CliRunner().invoke(app, ["info", "-m", str(path), "--json"])
    assert shown.exit_code == 0 and "\x1b" not in shown.stdout


def test_error_messages_show_control_characters_escaped(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["info", "-m", str(tmp_path / "gone\x1b[2J.onnx")])
    assert missing.exit_code == 2 and "gone\\x1b[2J.onnx" in missing.stderr and "\x1b" not in missing.stderr


def _raw_meta_copy(src: Path, dst: Path, meta: str, export: str) -> Path:
    import onnx

    proto = onnx.load(str(src))
    modelfile.set_onnx_metadata(proto, {"edgeleuk.meta": meta, "edgeleuk.export": export})
    onnx.save(proto, str(dst))
    return dst


DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_METADATA = {
    "deep meta": (META.to_json()[:-1] + f', "extra": {{"x": {DEEP}}}}}', json.dumps(EXPORT_INFO), "nested"),
    "deep export": (META.to_json(), '{"gate": ' + DEEP + "}", "nested"),
    "huge export": (META.to_json(), json.dumps({"pad": "x" * MAX_METADATA_CHARS}), "characters long"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_METADATA))
def test_deep_or_huge_metadata_json_is_refused_in_info_and_predict(
    models: dict[str, Path], tmp_path: Path, case: str
) -> None:
    meta, export, says = HOSTILE_METADATA[case]
    path = _raw_meta_copy(models["onnx"], tmp_path / "hostile.onnx", meta, export)
    with pytest.raises(UsageError, match=f"malformed edgeleuk metadata: .*{says}"):
        read_model_meta(path)
    runner = CliRunner()
    cells = write_bmp(tmp_path / "cells" / "1.bmp", gray_cell(100)).parent
    for args in (["info", "-m", str(path)], ["info", "-m", str(path), "--json"],
                 ["predict", str(cells), "-m", str(path), "--backend", "cpu", "--out", str(tmp_path / "p.csv")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and says in result.stderr, (args, result.output[-500:])


def test_metadata_with_brackets_inside_strings_is_not_nested() -> None:
    from edgeleuk.core.meta import parse_json

    text = json.dumps({"note": "[" * 1000 + '\\" {{{', "list": [[1, [2]]]})
    assert parse_json(text)["list"] == [[1, [2]]]
