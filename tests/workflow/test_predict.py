"""``edgeleuk predict`` end to end: rows, exit codes, formats, labels, summary, atomic output."""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from runtime_support import build_onnx, gray_cell, write_bad_files, write_bmp, write_flagged_files
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.errors import DataError, OutputError
from edgeleuk.workflow import outputs
from edgeleuk.workflow.inputs import index_inputs
from edgeleuk.workflow.predict import PredictOptions, predict
from edgeleuk.workflow.provenance import PROVENANCE_COLUMNS

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


def _cells(folder: Path) -> list[str]:
    """Six labelled C-NMC-named cells over three subjects; bright = ALL for the tiny model."""
    names = []
    for k, (subject, level) in enumerate(
        [("7", 210), ("7", 190), ("H3", 40), ("H3", 150), ("12", 230), ("H4", 20)]
    ):
        label = "hem" if subject.startswith("H") else "all"
        names.append(write_bmp(folder / f"UID_{subject}_{k}_1_{label}.bmp", gray_cell(level, seed=k)).name)
    return names


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _invoke(*args: str | Path):
    return runner.invoke(app, ["predict", *map(str, args)])


def test_one_row_per_file_with_errors_flags_and_truth(model: Path, tmp_path: Path) -> None:
    data = tmp_path / "cells"
    good = _cells(data)
    bad = write_bad_files(data)
    flagged = write_flagged_files(data)
    (data / "notes.txt").write_text("not an image name: not an input")
    out = tmp_path / "p.csv"
    result = _invoke(data, "--model", model, "--out", out, "--backend", "cpu")
    assert result.exit_code == 0, result.output
    rows = _read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted([*good, *bad, *flagged])
    assert list(rows[0]) == [*outputs.CSV_COLUMNS, "true_label", *PROVENANCE_COLUMNS]
    by_path = {r["path"]: r for r in rows}
    for name in bad:
        assert (
            by_path[name]["status"] == "error" and by_path[name]["error"] and by_path[name]["prob_all"] == ""
        )
    for name, adjustment in flagged.items():
        assert by_path[name]["status"] == "ok" and adjustment in by_path[name]["adjustment"]
    assert {by_path[n]["true_label"] for n in good} == {"all", "hem"}
    assert by_path["UID_H3_2_1_hem.bmp"]["subject"] == "H3"
    assert "ok 9, failed 4" in result.stdout
    assert "failed files:" in result.stdout and "zero.bmp: empty file" in result.stdout


def test_summary_has_split_subjects_and_metrics(model: Path, tmp_path: Path) -> None:
    _cells(tmp_path / "cells")
    result = _invoke(
        tmp_path / "cells", "--model", model, "--out", tmp_path / "p.csv", "--backend", "openvino"
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "on openvino [CPU, f32]" in text
    assert "ALL 4 (66.7%), HEM 2 (33.3%) at threshold 0.5 (default)" in text
    assert "    H3             2     1   50.0%" in text  # UID_H3 at grey 150 is called ALL
    assert "metrics against the true labels, 6 cells (3 ALL, 3 HEM)" in text
    assert "accuracy 0.833" in text


def test_numeric_order_and_recursive_paths(model: Path, tmp_path: Path) -> None:
    for n in (10, 2, 1):
        write_bmp(tmp_path / "d" / f"{n}.bmp", gray_cell(100))
    write_bmp(tmp_path / "d" / "sub" / "3.bmp", gray_cell(100))
    flat = tmp_path / "flat.csv"
    assert _invoke(tmp_path / "d", "--model", model, "--out", flat).exit_code == 0
    assert [r["path"] for r in _read_csv(flat)] == ["1.bmp", "2.bmp", "10.bmp"]
    deep = tmp_path / "deep.csv"
    assert _invoke(tmp_path / "d", "--model", model, "--out", deep, "--recursive").exit_code == 0
    assert [r["path"] for r in _read_csv(deep)] == ["1.bmp", "2.bmp", "10.bmp", "sub/3.bmp"]
    assert "true_label" not in _read_csv(deep)[0]


def test_threshold_option_overrides_the_model(model: Path, tmp_path: Path) -> None:
    write_bmp(tmp_path / "d" / "a.bmp", gray_cell(150))  # prob ~0.74
    out = tmp_path / "p.csv"
    assert _invoke(tmp_path / "d", "--model", model, "--out", out, "--threshold", "0.9").exit_code == 0
    assert _read_csv(out)[0]["label"] == "hem"


def test_exit_codes(model: Path, tmp_path: Path) -> None:
    mixed, all_bad, empty = tmp_path / "mixed", tmp_path / "bad", tmp_path / "empty"
    _cells(mixed)
    write_bad_files(mixed)
    write_bad_files(all_bad)
    (empty / "sub").mkdir(parents=True)
    out = tmp_path / "p.csv"
    assert _invoke(mixed, "--model", model, "--out", out).exit_code == 0
    assert _invoke(mixed, "--model", model, "--out", out, "--strict").exit_code == 1
    assert _invoke(all_bad, "--model", model, "--out", out).exit_code == 1
    _cells(good := tmp_path / "good")
    assert _invoke(good, "--model", model, "--out", out, "--strict").exit_code == 0
    missing_model = _invoke(good, "--model", tmp_path / "none.onnx", "--out", out)
    assert missing_model.exit_code == 2 and "model file not found" in missing_model.stderr
    missing_dir = _invoke(tmp_path / "nowhere", "--model", model, "--out", out)
    assert missing_dir.exit_code == 2 and "folder not found" in missing_dir.stderr
    no_images = _invoke(empty, "--model", model, "--out", out)
    assert no_images.exit_code == 2 and "add --recursive" in no_images.stderr


def test_explicit_cuda_here_exits_2_with_the_fix(model: Path, tmp_path: Path) -> None:
    from edgeleuk.runtime.cuda import CudaBackend

    reason = CudaBackend.availability()
    if reason is None:
        pytest.skip("this machine has a working CUDA provider")
    _cells(tmp_path / "d")
    result = _invoke(tmp_path / "d", "--model", model, "--out", tmp_path / "p.csv", "--backend", "cuda")
    assert result.exit_code == 2
    assert "pip install 'edgeleuk[gpu]'" in result.stderr
    assert not (tmp_path / "p.csv").exists()


def test_auto_backend_is_reported(model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgeleuk.runtime.cuda import CudaBackend
    from edgeleuk.runtime.openvino import OpenVINOBackend

    if CudaBackend.availability() is None:
        expected = "cuda"
    else:
        expected = "openvino" if OpenVINOBackend.availability() is None else "cpu"
    _cells(tmp_path / "d")
    with caplog.at_level(logging.INFO):
        result = _invoke(tmp_path / "d", "--model", model, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert f" on {expected} [" in result.stdout
    assert any(r.getMessage().startswith(f"backend auto -> {expected}: ") for r in caplog.records)


def test_jsonl_format(model: Path, tmp_path: Path) -> None:
    write_bmp(tmp_path / "d" / "UID_5_1_1_all.bmp", gray_cell(220))
    (tmp_path / "d" / "zero.bmp").write_bytes(b"")
    result = _invoke(tmp_path / "d", "--model", model, "--out", tmp_path / "p.jsonl", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [(x["path"], x["status"], x["subject"], x["true_label"]) for x in lines] == [
        ("UID_5_1_1_all.bmp", "ok", "5", "all"),
        ("zero.bmp", "error", None, None),
    ]
    assert lines[1]["prob_all"] is None and lines[0]["prob_all"] > 0.5


def test_default_output_name_follows_the_format(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_bmp(tmp_path / "d" / "1.bmp", gray_cell(220))
    assert _invoke("d", "--model", model, "--format", "jsonl").exit_code == 0
    assert (tmp_path / "predictions.jsonl").is_file() and not (tmp_path / "predictions.csv").exists()


def test_cnmc_submission(model: Path, tmp_path: Path) -> None:
    levels = {1: 220, 2: 30, 3: 200, 4: 60, 5: 90, 6: 100, 7: 110, 8: 120, 9: 240, 10: 250, 11: 10}
    for n, level in levels.items():
        write_bmp(tmp_path / "final" / f"{n}.bmp", gray_cell(level, seed=n))
    out = tmp_path / "submission.zip"
    result = _invoke(tmp_path / "final", "--model", model, "--out", out, "--format", "cnmc")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["isbi_valid.predict"]
        lines = zf.read("isbi_valid.predict").decode().splitlines()
    assert lines == ["1" if levels[n] > 128 else "0" for n in sorted(levels)]


def test_cnmc_refuses_failed_images_with_exit_1(model: Path, tmp_path: Path) -> None:
    for n in (1, 2, 4):
        write_bmp(tmp_path / "final" / f"{n}.bmp", gray_cell(200))
    (tmp_path / "final" / "3.bmp").write_bytes(b"")
    out = tmp_path / "submission.zip"
    result = _invoke(tmp_path / "final", "--model", model, "--out", out, "--format", "cnmc")
    assert result.exit_code == 1
    assert "SUBMISSION NOT WRITTEN: refusing to write the C-NMC submission: 1 image(s)" in result.stdout
    assert not out.exists()


def test_cnmc_needs_numbered_files_without_gaps(model: Path, tmp_path: Path) -> None:
    write_bmp(tmp_path / "a" / "1.bmp", gray_cell(200))
    write_bmp(tmp_path / "a" / "3.bmp", gray_cell(200))
    gap = _invoke(tmp_path / "a", "--model", model, "--out", tmp_path / "s.zip", "--format", "cnmc")
    assert gap.exit_code == 2 and "missing [2]" in gap.stderr
    write_bmp(tmp_path / "a" / "cell.bmp", gray_cell(200))
    named = _invoke(tmp_path / "a", "--model", model, "--out", tmp_path / "s.zip", "--format", "cnmc")
    assert named.exit_code == 2 and "needs files named <N>.bmp" in named.stderr


def test_crash_while_writing_leaves_no_partial_file(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cells(tmp_path / "d")
    out = tmp_path / "p.csv"
    out.write_text("previous run\n")
    calls = {"n": 0}
    real = csv.DictWriter.writerow

    def crash_on_third_row(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", crash_on_third_row)
    rescue_dir = tmp_path / "tmp"
    rescue_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_dir))
    with pytest.raises(OutputError, match="No space left") as failed:
        predict(tmp_path / "d", model=model, out=out, options=PredictOptions(progress=False))
    assert failed.value.exit_code == 1
    assert out.read_text() == "previous run\n"  # untouched: complete or absent
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".p.csv")] == []
    # Nothing classified is lost: the rows went to the temporary folder, and the message says where.
    (rescued,) = rescue_dir.iterdir()
    assert str(rescued) in str(failed.value)
    with open(rescued, newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 6


def test_prelim_labels_from_the_csv_beside_the_folder(synth_root: Path, model: Path, tmp_path: Path) -> None:
    summary = predict(
        synth_root / "prelim",
        model=model,
        out=tmp_path / "p.csv",
        options=PredictOptions(backend="cpu", progress=False),
    )
    rows = _read_csv(tmp_path / "p.csv")
    with open(synth_root / "prelim_labels.csv", newline="") as fh:
        expected = {r["new_names"]: r for r in csv.DictReader(fh)}
    assert len(rows) == len(expected) > 0
    for row in rows:
        truth = expected[row["path"]]
        assert row["true_label"] == ("all" if truth["labels"] == "1" else "hem")
        assert row["subject"] and row["subject"] in truth["Patient_ID"]
    text = summary.describe()
    assert text.startswith("SYNTHETIC data")
    assert "metrics against the true labels (SYNTHETIC)" in text


def test_truth_from_training_names_only_with_a_subject(tmp_path: Path) -> None:
    paths = [tmp_path / "UID_4_1_2_all.bmp", tmp_path / "photo_all.bmp"]
    for p in paths:
        write_bmp(p, gray_cell(100, size=20))
    truth = {r.path: (r.label, r.subject) for r in index_inputs(tmp_path).records}
    assert truth == {paths[0]: (1, "4"), paths[1]: (None, None)}


def test_library_call_raises_data_error_for_missing_folder(model: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError):
        predict(tmp_path / "nope", model=model, out=tmp_path / "p.csv")


def test_each_folder_is_listed_once_and_records_carry_the_truth(
    synth_root: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Predict indexes the folder once into records; labels and subjects come from that one pass."""
    listed: Counter[Path] = Counter()
    real_scandir = os.scandir

    def counting(path=".", *args):
        listed[Path(os.fsdecode(path)).resolve()] += 1
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", counting)
    opts = PredictOptions(backend="cpu", progress=False, recursive=True)
    for folder in (synth_root / "prelim", synth_root / "training_data"):
        listed.clear()
        summary = predict(folder, model=model, out=tmp_path / f"{folder.name}.csv", options=opts)
        inside = {p: n for p, n in listed.items() if p == folder.resolve() or folder.resolve() in p.parents}
        assert inside and set(inside.values()) == {1}, inside
        assert summary.metrics() is not None  # every row carries its true label
        assert all(r.subject for r in summary.rows)


def test_a_folder_named_like_an_image_gets_an_error_row(model: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    write_bmp(data / "1.bmp", gray_cell(100))
    (data / "dir.bmp").mkdir()
    (data / "sub").mkdir()  # an ordinary folder is no input
    out = tmp_path / "p.csv"
    result = _invoke(data, "--model", model, "--out", out, "--backend", "cpu")
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in _read_csv(out)}
    assert list(rows) == ["1.bmp", "dir.bmp"]
    assert rows["dir.bmp"]["status"] == "error" and "directory" in rows["dir.bmp"]["error"]
    # --recursive walks it as the folder it is
    write_bmp(data / "dir.bmp" / "2.bmp", gray_cell(100))
    deep = tmp_path / "deep.csv"
    assert _invoke(data, "--model", model, "--out", deep, "--recursive").exit_code == 0
    assert [r["path"] for r in _read_csv(deep)] == ["1.bmp", "dir.bmp/2.bmp"]
