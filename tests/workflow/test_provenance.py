"""Provenance in every row and in the sidecar; no silent mix of models in one output (workflow.provenance)."""

from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from runtime_support import FlakyBackend
from typer.testing import CliRunner
from workflow_support import build_brightness_onnx, write_cell

from edgeleuk.cli import app
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime.base import BackendInfo
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.wire import model_sha256
from edgeleuk.workflow.outputs import CSV_COLUMNS, TRUTH_COLUMN
from edgeleuk.workflow.predict import PredictOptions, predict
from edgeleuk.workflow.provenance import PROVENANCE_COLUMNS, SIDECAR_FORMAT, engine_name, sidecar_path
from edgeleuk.workflow.watch import COLUMNS, watch_folder

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
CALIBRATED = ModelMeta(arch="seresnext_tiny", threshold=0.488, threshold_source="calibrated: test",
                       extra={"calibration": {"sensitivity": 1.0, "specificity": 0.5, "n_all": 3, "n_hem": 3}})
runner = CliRunner()


@pytest.fixture(autouse=True)
def _bounded_watch_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch command runs until Ctrl-C; here it stops once the folder has been quiet a while."""
    from edgeleuk.workflow import watch

    monkeypatch.setattr(watch, "watch_folder", functools.partial(watch.watch_folder, max_idle=0.3))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A calibrated model (threshold 0.488) and another file of the same network (threshold 0.5)."""
    folder = tmp_path_factory.mktemp("models")
    return build_brightness_onnx(folder / "calibrated.onnx", CALIBRATED), build_brightness_onnx(folder / "plain.onnx")


def _cells(folder: Path, names: dict[str, int]) -> Path:
    for name, grey in names.items():
        write_cell(folder / name, grey)
    return folder


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or ()), list(reader)


def _id(model: Path) -> str:
    return model_sha256(model)[:12]


def _check_sidecar(out: Path, model: Path, threshold: float, engine: str) -> dict:
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert sidecar_path(out).name == out.name + ".provenance.json"
    assert record["format"] == SIDECAR_FORMAT and record["output"] == out.name
    assert record["edgeleuk_version"] and record["host"]
    entry = record["models"][_id(model)]
    assert entry["sha256"] == model_sha256(model) and entry["file"] == model.name
    assert entry["threshold"] == threshold and entry["class_names"] == ["hem", "all"]
    assert entry["engines"] == [engine] and TIME.fullmatch(entry["first_seen_utc"])
    assert {"export_profile", "gates", "calibration"} <= set(entry)
    return record


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_predict_rows_and_sidecar_say_which_model_made_each_call(models, tmp_path: Path, fmt: str) -> None:
    calibrated, _ = models
    folder = _cells(tmp_path / "cells", {"UID_1_1_1_all.bmp": 200, "UID_H1_1_1_hem.bmp": 40})
    (folder / "bad.bmp").write_bytes(b"BM not a bitmap")  # error rows carry provenance too
    out = tmp_path / f"p.{fmt}"
    predict(folder, calibrated, out, PredictOptions(backend="cpu", fmt=fmt, progress=False))
    if fmt == "csv":
        header, rows = _csv(out)
        assert header == [*CSV_COLUMNS, TRUTH_COLUMN, *PROVENANCE_COLUMNS]
        assert {r["threshold"] for r in rows} == {"0.488000"}
    else:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert list(rows[0])[-5:] == list(PROVENANCE_COLUMNS)
        assert {r["threshold"] for r in rows} == {0.488}
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok", "error"}
    assert {(r["model"], r["tta"], r["engine"]) for r in rows} == {(_id(calibrated), "full", "cpu-fp32")}
    assert all(TIME.fullmatch(r["time_utc"]) for r in rows)
    record = _check_sidecar(out, calibrated, 0.488, "cpu-fp32")
    entry = record["models"][_id(calibrated)]
    assert entry["calibration"] == CALIBRATED.extra["calibration"] and entry["export_profile"] == "hand-built"
    assert record["changes"] == []


def test_a_cnmc_submission_stays_as_the_challenge_defines_it(models, tmp_path: Path) -> None:
    import zipfile

    folder = _cells(tmp_path / "cells", {"1.bmp": 200, "2.bmp": 40})
    out = tmp_path / "s.zip"
    predict(folder, models[1], out, PredictOptions(backend="cpu", fmt="cnmc", progress=False))
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["isbi_valid.predict"] and zf.read("isbi_valid.predict") == b"1\n0\n"
    _check_sidecar(out, models[1], 0.5, "cpu-fp32")  # beside the zip, not in it


def _watch(folder: Path, out: Path, model: Path, **kwargs):
    return watch_folder(folder, out=out, classifier=Classifier.load(model, backend="cpu"), interval=0.02,
                        max_idle=0.3, **kwargs)


def test_watch_rows_and_sidecar_say_which_model_made_each_call(models, tmp_path: Path) -> None:
    calibrated, _ = models
    folder = _cells(tmp_path / "in", {"1.bmp": 200, "2.bmp": 40})
    out = tmp_path / "sess.csv"
    _watch(folder, out, calibrated)
    header, rows = _csv(out)
    assert tuple(header) == COLUMNS and header[-5:] == list(PROVENANCE_COLUMNS)
    assert [(r["model"], r["threshold"], r["tta"], r["engine"]) for r in rows] == [
        (_id(calibrated), "0.488000", "full", "cpu-fp32")
    ] * 2
    assert all(TIME.fullmatch(r["time_utc"]) for r in rows)
    _check_sidecar(out, calibrated, 0.488, "cpu-fp32")


def _session_with(models, tmp_path: Path) -> tuple[Path, Path, bytes, bytes]:
    """A watch session's CSV made by the calibrated model, ending in a torn row; its bytes and sidecar's."""
    folder = _cells(tmp_path / "in", {"1.bmp": 200, "2.bmp": 40})
    out = tmp_path / "sess.csv"
    _watch(folder, out, models[0])
    with open(out, "ab") as fh:
        fh.write(b"3.bmp,ok,,0.4")  # a crash mid-row: even that is not cut when the run is refused
    write_cell(folder / "3.bmp", 130)
    return folder, out, out.read_bytes(), sidecar_path(out).read_bytes()


def test_watch_restart_with_another_model_exits_2_and_writes_nothing(models, tmp_path: Path) -> None:
    calibrated, plain = models
    folder, out, before, record = _session_with(models, tmp_path)
    result = runner.invoke(app, ["watch", str(folder), "--model", str(plain), "--out", str(out), "--backend", "cpu"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    for fact in (_id(calibrated), "calibrated.onnx", "0.488000", _id(plain), "plain.onnx", "0.500000",
                 "new --out", "--continue-with-new-model"):
        assert fact in message, (fact, message)
    assert "Traceback" not in result.output
    assert out.read_bytes() == before and sidecar_path(out).read_bytes() == record


def test_watch_restart_at_another_threshold_is_refused(models, tmp_path: Path) -> None:
    folder, out, before, record = _session_with(models, tmp_path)
    other = Classifier.load(models[0], backend="cpu", threshold=0.6)  # the same file, another threshold
    with pytest.raises(UsageError, match=r"threshold 0\.488000.*threshold 0\.600000"):
        watch_folder(folder, out=out, classifier=other, max_idle=0.1)
    assert out.read_bytes() == before and sidecar_path(out).read_bytes() == record


def test_continue_with_new_model_goes_on_and_records_the_change(
    models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calibrated, plain = models
    folder, out, _, _ = _session_with(models, tmp_path)
    result = runner.invoke(app, ["watch", str(folder), "--model", str(plain), "--out", str(out), "--backend", "cpu",
                                 "--continue-with-new-model", "--interval", "0.05"])
    assert result.exit_code == 0, result.output
    assert "going on with model" in caplog.text and _id(calibrated) in caplog.text  # said, not silent
    _, rows = _csv(out)
    assert [(r["path"], r["model"], r["threshold"]) for r in rows] == [
        ("1.bmp", _id(calibrated), "0.488000"), ("2.bmp", _id(calibrated), "0.488000"),
        ("3.bmp", _id(plain), "0.500000"),
    ]
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert set(record["models"]) == {_id(calibrated), _id(plain)}
    (change,) = record["changes"]
    assert change["from"] == _id(calibrated) and change["to"] == _id(plain)
    assert (change["from_threshold"], change["to_threshold"]) == (0.488, 0.5)
    assert change["reason"] == "--continue-with-new-model" and TIME.fullmatch(change["time_utc"])
    # The file now goes on with the new model: a plain restart with it is no mix.
    write_cell(folder / "4.bmp", 220)
    _watch(folder, out, plain)
    assert len(json.loads(sidecar_path(out).read_text(encoding="utf-8"))["changes"]) == 1
    # The report of that file says so: a banner naming the change, and figures per model and threshold.
    from edgeleuk.workflow.report import write_report

    html = write_report(out, tmp_path / "r.html", images=folder).read_text(encoding="utf-8")
    assert "MIXED MODELS" in html and "--continue-with-new-model" in html
    assert f"Calls of model {_id(calibrated)} at threshold 0.488" in html
    assert f"Calls of model {_id(plain)} at threshold 0.5" in html
    assert html.count("<svg") == 2 and "calibrated.onnx" in html and "plain.onnx" in html


def test_an_output_from_before_provenance_is_refused_with_the_fix(models, tmp_path: Path) -> None:
    folder = _cells(tmp_path / "in", {"1.bmp": 200})
    out = tmp_path / "old.csv"
    old = ",".join([*CSV_COLUMNS, TRUTH_COLUMN]) + "\n1.bmp,ok,,0.880797,all,,,\n"
    out.write_text(old, encoding="utf-8")
    result = runner.invoke(app, ["watch", str(folder), "--model", str(models[0]), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "before edgeleuk recorded which model" in message and "new --out" in message, message
    assert out.read_text(encoding="utf-8") == old and not sidecar_path(out).exists()


def test_an_output_that_is_a_folder_is_refused_before_any_work(models, tmp_path: Path) -> None:
    folder = _cells(tmp_path / "in", {"1.bmp": 200})
    (tmp_path / "out.csv").mkdir()
    result = runner.invoke(app, ["watch", str(folder), "--model", str(models[0]), "--out", str(tmp_path / "out.csv")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "choose another --out" in " ".join(result.stderr.split())
    assert list((tmp_path / "out.csv").iterdir()) == [] and not sidecar_path(tmp_path / "out.csv").exists()


def test_engine_names_backend_and_precision_or_the_server_engine() -> None:
    def info(name: str, precision: str, **details) -> BackendInfo:
        return BackendInfo(name=name, engine="e", providers=("p",), precision=precision, details=details)

    assert engine_name(info("cpu", "fp32")) == "cpu-fp32"
    assert engine_name(info("openvino", "bf16")) == "openvino-bf16"
    assert engine_name(info("openvino", "f32")) == "openvino-fp32"  # one spelling of a precision
    assert engine_name(info("remote", "fp32", server="http://127.0.0.1:1", server_engine="openvino-bf16")) == (
        "remote:openvino-bf16"
    )
    assert engine_name(info("remote", "fp32", server="http://127.0.0.1:1")) == "remote"


class _ServerBackend(FlakyBackend):
    """Stands in for the remote backend: the engine runs in a server that states it."""

    name = "remote"

    def info(self) -> BackendInfo:
        return BackendInfo(name="remote", engine="edgeleuk serve", providers=("cpu@server",), precision="fp32",
                           details={"server": "http://127.0.0.1:9", "server_engine": "openvino-bf16"})


def test_rows_made_by_a_server_carry_its_engine(tmp_path: Path) -> None:
    folder = _cells(tmp_path / "in", {"1.bmp": 200})
    out = tmp_path / "remote.csv"
    clf = Classifier(_ServerBackend())
    watch_folder(folder, out=out, classifier=clf, interval=0.02, max_idle=0.3)
    (row,) = _csv(out)[1]
    assert row["engine"] == "remote:openvino-bf16" and row["model"] == _id(Path(FlakyBackend.model_path))
    assert json.loads(sidecar_path(out).read_text())["models"][row["model"]]["engines"] == ["remote:openvino-bf16"]
    assert np.isclose(float(row["prob_all"]), 1 / (1 + np.exp(-12.0 * (200 / 255 - 0.5))), atol=1e-5)


def test_a_folder_model_is_identified_by_every_file_in_it(tmp_path: Path) -> None:
    import dataclasses

    from edgeleuk.io.formats import FORMATS

    fmt = dataclasses.replace(FORMATS["onnx"], name="pkg", suffix=".pkg", layout="folder", companions=())
    folder = tmp_path / "model.pkg"
    (folder / "weights").mkdir(parents=True)
    (folder / "graph.txt").write_text("graph")
    (folder / "weights" / "w.bin").write_bytes(b"\0" * 8)
    before = fmt.sha256(folder)
    assert re.fullmatch(r"[0-9a-f]{64}", before) and fmt.sha256(folder) == before
    (folder / "weights" / "w.bin").write_bytes(b"\1" * 8)
    assert fmt.sha256(folder) != before


def test_an_ir_is_identified_by_its_xml_and_its_weights(tmp_path: Path) -> None:
    """The id an IR has always had (served models are checked against it): SHA-256 of both hex digests."""
    import hashlib

    from edgeleuk.io.files import sha256_file

    xml, weights = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_text("<net/>")
    weights.write_bytes(b"\0" * 8)
    both = hashlib.sha256((sha256_file(xml) + sha256_file(weights)).encode("ascii")).hexdigest()
    assert model_sha256(xml) == both
    weights.write_bytes(b"\1" * 8)
    assert model_sha256(xml) != both


def test_rows_name_the_engine_each_call_says_made_it(models, tmp_path: Path) -> None:
    """A cluster worker's engine (``auto`` may pick another on each node) goes into its rows and the sidecar."""
    import dataclasses

    calibrated, _ = models
    folder = _cells(tmp_path / "cells", {"a.bmp": 200, "b.bmp": 40, "c.bmp": 90})
    clf = Classifier.load(calibrated, "cpu")
    engines = iter(["openvino@ray-bf16", None, "cpu@ray-fp32"])

    class Workers:  # stands in for the cluster: the driver's classifier, calls tagged by the worker that made them
        def __getattr__(self, name):
            return getattr(clf, name)

        def iter_predict(self, paths):
            for pred in clf.iter_predict(paths):
                yield dataclasses.replace(pred, engine=next(engines))

    out = tmp_path / "p.csv"
    predict(folder, calibrated, out, PredictOptions(backend="cpu", progress=False), classifier=Workers())
    _, rows = _csv(out)
    assert [r["engine"] for r in rows] == ["openvino@ray-bf16", "cpu-fp32", "cpu@ray-fp32"]
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert record["models"][_id(calibrated)]["engines"] == ["cpu-fp32", "cpu@ray-fp32", "openvino@ray-bf16"]
