"""``report`` on rows of ``predict --fields``: a line per smear field by subject, cells cut from their field.

SYNTHETIC fields and the brightness test model; a fake segmentation (tests/field_support.py).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from field_support import ALL_GREY, BUSY, GROUND, ONE, write_field

from edgeleuk.workflow import fieldrows
from edgeleuk.workflow.fieldpredict import predict_fields
from edgeleuk.workflow.fieldrows import FieldOptions, fields_path
from edgeleuk.workflow.predict import PredictOptions
from edgeleuk.workflow.report import build_page, write_report
from edgeleuk.workflow.report_data import load_rows
from edgeleuk.workflow.report_fields import summarise_fields


@pytest.fixture
def predicted(tmp_path: Path, bright_model: Path, squares_are_cells: None) -> tuple[Path, Path]:
    folder = tmp_path / "smear"
    write_field(folder / "UID_7_1_1_all.png", BUSY)
    write_field(folder / "UID_7_2_1_all.png", [])
    write_field(folder / "UID_H3_1_1_hem.png", ONE)
    out = tmp_path / "p.csv"
    predict_fields(folder, bright_model, out, PredictOptions(backend="cpu", progress=False),
                   FieldOptions(model_um_per_px=0.25))
    return out, folder


def test_fields_are_summarised_by_subject_with_what_was_not_classified(predicted: tuple[Path, Path]) -> None:
    out, _ = predicted
    rows = load_rows(out)
    assert [(r.field, r.cell, r.bbox) for r in rows][:2] == [
        ("UID_7_1_1_all.png", 1, (40, 40, 70, 70)), ("UID_7_1_1_all.png", 2, (200, 120, 240, 160))]
    ledger = fieldrows.FieldLedger.read(out)
    lines = summarise_fields(rows, ledger.fields if ledger else None)
    assert [(f.subject, f.shown, f.cells, f.called_all) for f in lines] == [
        ("7", "UID_7_1_1_all.png", 2, 1), ("7", "UID_7_2_1_all.png", 0, 0), ("H3", "UID_H3_1_1_hem.png", 1, 1)]
    assert lines[0].excluded_text == "1 edge cut, 1 platelet" and lines[1].excluded_text == "none"
    assert "no white cell" in lines[1].error and lines[0].error == ""
    fields_path(out).unlink()  # without the record the counts are unknown, the lines stay
    assert summarise_fields(rows, None)[0].excluded_text == "–"


def test_report_page_has_a_field_table_and_cells_cut_from_their_field(
    predicted: tuple[Path, Path], tmp_path: Path
) -> None:
    out, folder = predicted
    page = build_page(out, images=folder)
    assert [f.shown for f in page.groups[0].fields] == ["UID_7_1_1_all.png", "UID_7_2_1_all.png", "UID_H3_1_1_hem.png"]
    html = write_report(out, tmp_path / "r.html", images=folder).read_text()
    table = html[html.index("<h3>Smear fields</h3>"):]
    assert "1 edge cut, 1 platelet" in table and "UID_H3_1_1_hem.png" in table
    assert "UID_H3_1_1_hem.png cell 1" in html
    card = next(c for c in page.groups[0].confident if c.row.field == "UID_H3_1_1_hem.png")
    jpeg = cv2.imdecode(np.frombuffer(base64.b64decode(card.uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_GRAYSCALE)
    # the 30-px square with a 4-px margin of ground on each side, not the whole 400x300 field
    assert jpeg.shape[0] == jpeg.shape[1]
    centre, corner = int(jpeg[jpeg.shape[0] // 2, jpeg.shape[1] // 2]), int(jpeg[1, 1])
    assert abs(centre - ALL_GREY) <= 6 and abs(corner - GROUND) <= 6
    assert len(re.findall("data:image/jpeg", html)) >= 3


def test_fields_are_ordered_by_subject_then_field() -> None:
    from edgeleuk.workflow.report_data import Row

    def row(field: str, subject: str | None, prob: float) -> Row:
        return Row(path=field, ok=True, error=None, prob=prob, called_all=prob >= 0.5, subject=subject,
                   adjustment="", truth=None, field=field, cell=1)

    rows = [row("a10.png", "H3", 0.9), row("a2.png", None, 0.1), row("a9.png", "12", 0.2), row("b.png", "7", 0.3),
            row("a1.png", "12", 0.7)]
    assert [(f.subject, f.shown) for f in summarise_fields(rows)] == [
        ("7", "b.png"), ("12", "a1.png"), ("12", "a9.png"), ("H3", "a10.png"), ("(unknown)", "a2.png")]
