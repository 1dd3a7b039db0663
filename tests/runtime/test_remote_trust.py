"""The ``remote`` client checks the trust fields of every answer (``qc``, ``ood_score``) like the others.

The rows' qc and OOD score are made on the client from its own model file; a server whose answer
carries them malformed is not what it claims: an engine fault (exit 1), never a row. An answer
without them (an older server) is accepted.
"""

from __future__ import annotations

import csv
import math

import pytest
from fake_server import Fake, honest_metadata, serving
from runtime_support import build_onnx, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.runtime import wire

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_onnx(tmp_path_factory.mktemp("remote-trust") / "model.onnx")


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-trust-cells")
    for i, level in enumerate((40, 220)):
        write_bmp(root / f"cell_{i}.bmp", gray_cell(level, seed=i))
    return root


def _predict(cells, model, change, tmp_path):
    def answer(i, honest):
        return {**honest, "predictions": [change({**p}) for p in honest["predictions"]]}

    with serving(Fake(honest_metadata(model), answer=answer)) as url:
        return runner.invoke(app, ["predict", str(cells), "-m", str(model), "--backend", "remote", "--server", url,
                                   "--out", str(tmp_path / "out.csv"), "--batch", "1", "--server-timeout", "10"])


def _set(**fields):
    return lambda record: {**record, **fields}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(qc="blur"), "field 'qc' is 'blur'"),
        (_set(qc=["blur", 3]), "field 'qc'"),
        (_set(qc=["Blur; rm -rf"]), "field 'qc'"),
        (_set(qc=["x" * 40]), "field 'qc'"),
        (_set(ood_score=-1.0), "field 'ood_score' is '-1.0'"),
        (_set(ood_score=math.inf), "field 'ood_score'"),
        (_set(ood_score="3"), "field 'ood_score'"),
        (_set(ood_score=True), "field 'ood_score'"),
    ],
)
def test_a_malformed_trust_field_is_an_engine_fault_never_a_row(model, cells, tmp_path, change, message):
    result = _predict(cells, model, change, tmp_path)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.partial.csv").exists()


@pytest.mark.parametrize(
    "change",
    [_set(qc=["blur", "off_centre"], ood_score=12.5), _set(ood_score=0), lambda r: {
        k: v for k, v in r.items() if k not in ("qc", "ood_score")}],
    ids=["flagged", "zero", "older-server"],
)
def test_well_formed_or_absent_trust_fields_are_accepted(model, cells, tmp_path, change):
    result = _predict(cells, model, change, tmp_path)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    # The row's qc is the client's own (not the server's): nothing here comes from the answer's fields.
    assert [r["label"] for r in rows] == ["hem", "all"] and all(r["qc"] != "blur,off_centre" for r in rows)


def test_check_trust_fields_directly():
    ok = wire.prediction_record("ok", threshold=0.5, prob_all=0.5, logit=0.0, qc=("blank",), ood_score=1.0)
    assert (ok["qc"], ok["ood_score"], "heatmap" in ok) == (["blank"], 1.0, False)
    assert wire.check_trust_fields(ok) is None and wire.check_trust_fields({}) is None
    assert "heatmap" in wire.prediction_record("ok", threshold=0.5, heatmap="aGk=")
    assert wire.check_trust_fields({"qc": None}) and wire.check_trust_fields({"ood_score": math.nan})


def test_every_reason_the_checks_give_passes_the_wire_check():
    from edgeleuk.quality.checks import REASONS
    from edgeleuk.workflow.flags import OOD_REASON

    assert OOD_REASON not in REASONS  # the OOD flag reads apart from the quality reasons
    assert wire.check_trust_fields({"qc": [*REASONS, OOD_REASON], "ood_score": 0.0}) is None
