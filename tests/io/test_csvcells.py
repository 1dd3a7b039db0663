"""edgeleuk.io.csvcells: exact names in valid UTF-8, and cells a spreadsheet will not evaluate."""

from __future__ import annotations

import os

import pytest

from edgeleuk.io.csvcells import name_to_text, plain_cell, plain_row, sheet_cell, sheet_row, text_to_name

NAMES = [
    "UID_7_1_1_all.bmp",
    "caf\udce9.bmp",  # b"caf\xe9.bmp": Latin-1 from an SMB share, as os.scandir lists it
    "sub/\udcff\udc80.png",
    "a\\b.bmp",  # a literal backslash (legal on Linux)
    "a\\xe9.bmp",  # text that looks like an escape
    "\\\\server.bmp",
    "lone-\ud800.bmp",  # a lone surrogate that is not an escaped byte (Windows)
    "Zelle_ä_µ.tif",
    '=HYPERLINK("x").bmp',
    "line\nbreak.bmp",
]


@pytest.mark.parametrize("name", NAMES)
def test_names_become_valid_utf8_and_come_back_exactly(name: str) -> None:
    text = name_to_text(name)
    text.encode("utf-8")  # strict: no surrogate can reach a file
    assert text_to_name(text) == name


def test_ordinary_names_are_written_unchanged_and_bytes_round_trip() -> None:
    assert name_to_text("UID_H10_43_1_hem.bmp") == "UID_H10_43_1_hem.bmp"
    assert name_to_text("Zelle_ä.bmp") == "Zelle_ä.bmp"
    assert name_to_text("caf\udce9.bmp") == "caf\\xe9.bmp"
    assert os.fsencode(text_to_name("caf\\xe9.bmp")) == b"caf\xe9.bmp"


def test_old_files_with_a_lone_backslash_still_read_as_written() -> None:
    assert text_to_name("a\\b.bmp") == "a\\b.bmp"  # \b is no escape of ours


@pytest.mark.parametrize(
    "text", ["=1+1", "+1 2", "-x", "@SUM(1)", "\tx", "\rx", '=HYPERLINK("x").bmp', "'quoted", "''"]
)
def test_formula_cells_are_neutralised_and_read_back_exactly(text: str) -> None:
    cell = sheet_cell(text)
    assert cell.startswith("'") and cell[1:] == text
    assert plain_cell(cell) == text


@pytest.mark.parametrize("text", ["-1.25", "+3", "-0", "0.5", "ok", "", "UID_1.bmp", "a'b"])
def test_numbers_and_plain_text_stay_as_they_are(text: str) -> None:
    assert sheet_cell(text) == text
    assert plain_cell(text) == text


def test_rows() -> None:
    row = {"path": "=x.bmp", "prob_all": "0.5", "logit": "-2.5", "error": None}
    cells = sheet_row(row)
    assert cells == {"path": "'=x.bmp", "prob_all": "0.5", "logit": "-2.5", "error": ""}
    assert plain_row(cells) == {"path": "=x.bmp", "prob_all": "0.5", "logit": "-2.5", "error": ""}
