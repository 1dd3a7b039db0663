"""Rows that say whether to trust a call: the qc and ood_score columns, and what --qc flag|strict|off does.

The classifier here is the brightness model wrapped so that chosen files come back flagged, as
the quality and OOD checks would flag them (``workflow_support.Flagging``): the workflow's side is
tested without depending on what the checks compute.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import zipfile
from pathlib import Path

import pytest
from runtime_support import build_onnx, gray_cell, write_bmp
from workflow_support import Flagging

from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.classifier import Classifier, Prediction
from edgeleuk.workflow import flags, outputs
from edgeleuk.workflow.outputs import ResultRow, SubmissionRefused
from edgeleuk.workflow.predict import PredictOptions, predict
from edgeleuk.workflow.provenance import PROVENANCE_COLUMNS


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("qc-model") / "tiny.onnx")


@pytest.fixture(scope="module")
def clf(model: Path) -> Flagging:
    return Flagging(Classifier.load(model, "cpu"))


def _cells(folder: Path) -> Path:
    """Six C-NMC-named cells: 3 ALL (bright), 3 HEM (dark); two flagged, both called WRONGLY by the model."""
    for name, level in [("UID_7_1_1_all", 220), ("UID_7_2_1_all", 200), ("UID_7_3_1_blur_all", 40),
                        ("UID_H3_1_1_hem", 30), ("UID_H3_2_1_hem", 50), ("UID_H3_3_1_odd_hem", 230)]:
        write_bmp(folder / f"{name}.bmp", gray_cell(level))
    (folder / "UID_H3_4_1_hem.bmp").write_bytes(b"")  # one failed file
    return folder


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _run(tmp_path: Path, clf, qc: str, fmt: str = "csv"):
    folder = _cells(tmp_path / "cells")
    out = tmp_path / f"p.{fmt}"
    return predict(folder, clf.backend.model_path, out, PredictOptions(progress=False, qc=qc, fmt=fmt), classifier=clf)


def test_columns_sit_after_the_label_and_provenance_stays_last() -> None:
    cols = outputs.columns(with_truth=True)
    assert cols[cols.index("label") + 1 : cols.index("label") + 3] == flags.TRUST_COLUMNS
    assert cols[-len(PROVENANCE_COLUMNS):] == PROVENANCE_COLUMNS


def test_flag_mode_keeps_the_label_and_shows_why(tmp_path: Path, clf) -> None:
    summary = _run(tmp_path, clf, "flag")
    rows = {Path(r["path"]).stem: r for r in _read(tmp_path / "p.csv")}
    blur, odd, good, gone = (rows[k] for k in ("UID_7_3_1_blur_all", "UID_H3_3_1_odd_hem", "UID_7_1_1_all",
                                               "UID_H3_4_1_hem"))
    assert (blur["status"], blur["label"], blur["qc"], blur["ood_score"]) == ("ok", "hem", "blur", "1.5")
    assert (odd["status"], odd["label"], odd["qc"], odd["ood_score"]) == ("ok", "all", "ood", "123.457")
    assert (good["qc"], gone["qc"], gone["ood_score"], gone["status"]) == ("ok", "", "", "error")
    # The wrongly called flagged cells count: 6 scored, 2 wrong.
    m = summary.metrics()
    assert (m["n"], m["confusion"]) == (6, [[2, 1], [1, 2]])
    assert (summary.ok, summary.flagged, summary.failed, summary.n_all) == (6, 0, 1, 3)
    text = summary.describe()
    assert "flagged 2 cell(s) (blur 1, ood 1): labels kept" in text and "UID_7_3_1_blur_all.bmp: blur" in text


def test_strict_withholds_the_label_and_leaves_the_cell_out_of_counts_and_metrics(tmp_path: Path, clf) -> None:
    summary = _run(tmp_path, clf, "strict")
    rows = {Path(r["path"]).stem: r for r in _read(tmp_path / "p.csv")}
    for key, reason in (("UID_7_3_1_blur_all", "blur"), ("UID_H3_3_1_odd_hem", "ood")):
        r = rows[key]
        assert (r["status"], r["label"], r["qc"], r["error"]) == ("flagged", "", reason, "")
        assert 0.0 <= float(r["prob_all"]) <= 1.0  # the probability is still written
    m = summary.metrics()
    assert (m["n"], m["confusion"], m["f1"]) == (4, [[2, 0], [0, 2]], 1.0)  # the two wrong calls are out
    assert (summary.ok, summary.flagged, summary.failed, summary.n_all) == (4, 2, 1, 2)
    assert summary.subject_shares() == {"7": (2, 2), "H3": (2, 0)}
    text = summary.describe()
    assert "ok 4, failed 1, flagged 2" in text and "ALL 2 (50.0%), HEM 2 (50.0%)" in text
    assert "no label, left out of the ALL/HEM counts and the metrics" in text
    assert summary.exit_code() == 0 and summary.exit_code(strict=True) == 1  # --strict: the empty file


def test_strict_with_every_cell_flagged_still_exits_0(tmp_path: Path, clf) -> None:
    folder = tmp_path / "cells"
    for k in range(3):
        write_bmp(folder / f"blur_{k}.bmp", gray_cell(100 + k))
    summary = predict(folder, clf.backend.model_path, tmp_path / "p.csv",
                      PredictOptions(progress=False, qc="strict"), classifier=clf)
    assert (summary.ok, summary.flagged, summary.failed) == (0, 3, 0)
    assert summary.exit_code(strict=True) == 0  # flags are not failures
    assert summary.metrics() is None


def test_off_leaves_qc_empty_and_flags_nothing(tmp_path: Path, clf) -> None:
    summary = _run(tmp_path, clf, "off")
    rows = _read(tmp_path / "p.csv")
    assert {r["qc"] for r in rows} == {""} and {r["status"] for r in rows} == {"ok", "error"}
    assert summary.ok == 6 and "checks off (--qc off)" in summary.describe()


def test_jsonl_carries_the_fields(tmp_path: Path, clf) -> None:
    _run(tmp_path, clf, "strict", fmt="jsonl")
    rows = {Path(r["path"]).stem: r for r in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    odd = rows["UID_H3_3_1_odd_hem"]
    assert (odd["status"], odd["label"], odd["qc"], odd["ood_score"]) == ("flagged", None, "ood", 123.457)
    assert rows["UID_H3_4_1_hem"]["qc"] is None and rows["UID_7_1_1_all"]["ood_score"] == 1.5
    assert list(odd)[-len(PROVENANCE_COLUMNS):] == list(PROVENANCE_COLUMNS)


def test_cnmc_with_strict_is_refused_before_any_inference(tmp_path: Path, clf, monkeypatch) -> None:
    folder = tmp_path / "sub"
    for n in (1, 2):
        write_bmp(folder / f"{n}.bmp", gray_cell(100))
    monkeypatch.setattr(Flagging, "iter_predict", lambda *a: pytest.fail("inference ran"))
    with pytest.raises(UsageError, match="--qc flag"):
        predict(folder, clf.backend.model_path, tmp_path / "s.zip",
                PredictOptions(progress=False, qc="strict", fmt="cnmc"), classifier=clf)
    assert not (tmp_path / "s.zip").exists()


def test_cnmc_writer_refuses_a_withheld_call_and_writes_flagged_calls_under_flag(tmp_path: Path) -> None:
    ok = Prediction("1.bmp", "ok", prob_all=0.9, label="all", logit=2.0)
    held = flags.judge(Prediction("2.bmp", "ok", prob_all=0.1, label="hem", logit=-2.0, qc=("blank",)), "strict")
    with pytest.raises(SubmissionRefused, match="withheld by --qc strict"):
        outputs.write_cnmc(tmp_path / "s.zip", [ResultRow("1.bmp", ok), ResultRow("2.bmp", held)], "all")
    assert not (tmp_path / "s.zip").exists() and (tmp_path / "s.csv").exists()
    kept = flags.judge(dataclasses.replace(held, status="ok", label="hem"), "flag")
    outputs.write_cnmc(tmp_path / "s.zip", [ResultRow("1.bmp", ok), ResultRow("2.bmp", kept)], "all")
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert zf.read(outputs.CNMC_MEMBER).decode() == "1\n0\n"


def test_judge_and_cells() -> None:
    p = Prediction("a", "ok", prob_all=0.7, label="all", logit=1.0, qc=("blank", "area"), ood_score=2.0,
                   ood_flag=True)
    assert flags.reasons(p) == ("blank", "area", "ood") and p.flagged
    strict = flags.judge(p, "strict")
    assert (strict.status, strict.label, strict.prob_all) == ("flagged", None, 0.7)
    assert flags.qc_cell(strict, "strict") == "blank,area,ood"
    assert flags.judge(p, "flag") is p
    off = flags.judge(p, "off")
    assert not off.flagged and flags.qc_cell(off, "off") is None and off.label == "all"
    clean = Prediction("b", "ok", prob_all=0.2, label="hem", logit=-1.0)
    assert flags.judge(clean, "strict") is clean and flags.qc_cell(clean, "flag") == "ok"
    assert flags.ood_cell(dataclasses.replace(clean, ood_score=1234567.891)) == 1234570.0
    err = Prediction("c", "error", error="empty")
    assert flags.judge(err, "strict") is err and flags.qc_cell(err, "flag") is None
    with pytest.raises(UsageError, match="unknown --qc"):
        flags.check_qc_mode("lenient")


def test_cli_qc_choices_and_refused_combinations(tmp_path: Path, model: Path) -> None:
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    folder = tmp_path / "cells"
    for n in (1, 2):
        write_bmp(folder / f"{n}.bmp", gray_cell(100 * n))
    runner = CliRunner()
    base = ["predict", str(folder), "-m", str(model), "--backend", "cpu"]
    ok = runner.invoke(app, [*base, "--qc", "flag", "--out", str(tmp_path / "p.csv")])
    assert ok.exit_code == 0, ok.output
    assert _read(tmp_path / "p.csv")[0].keys() >= {"qc", "ood_score"}
    bad = runner.invoke(app, [*base, "--qc", "lenient"])
    assert bad.exit_code == 2 and "lenient" in bad.output
    cnmc = runner.invoke(app, [*base, "--qc", "strict", "--format", "cnmc", "--out", str(tmp_path / "s.zip")])
    assert cnmc.exit_code == 2 and "--qc flag" in cnmc.output and not (tmp_path / "s.zip").exists()
    ray = runner.invoke(app, [*base, "--heatmaps", str(tmp_path / "maps"), "--cluster", "auto"])
    assert ray.exit_code == 2 and "not available with --cluster" in ray.output
