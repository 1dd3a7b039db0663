"""Predict summary: exit codes and the per-subject share."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeleuk.runtime.base import BackendInfo
from edgeleuk.runtime.classifier import Prediction
from edgeleuk.workflow.outputs import ResultRow
from edgeleuk.workflow.predict import PredictSummary

INFO = BackendInfo("cpu", "onnxruntime x", ("CPUExecutionProvider",), "fp32")


def _summary(statuses: str, refused: str | None = None) -> PredictSummary:
    rows = []
    for k, s in enumerate(statuses):
        if s == "e":
            rows.append(ResultRow(f"{k}.bmp", Prediction(f"{k}.bmp", "error", error="bad")))
        else:
            pred = Prediction(
                f"{k}.bmp", "ok", prob_all=0.9 if s == "a" else 0.1, label="all" if s == "a" else "hem"
            )
            rows.append(ResultRow(f"{k}.bmp", pred, subject="H1" if s == "h" else "7"))
    return PredictSummary(
        Path("d"), Path("p.csv"), "csv", tuple(rows), INFO, 0.5, "default", 1.0, refused=refused
    )


@pytest.mark.parametrize(
    "statuses, strict, code",
    [
        ("aah", False, 0),
        ("aah", True, 0),
        ("ahe", False, 0),
        ("ahe", True, 1),
        ("ee", False, 1),
        ("", False, 1),
    ],
)
def test_exit_codes(statuses: str, strict: bool, code: int) -> None:
    assert _summary(statuses).exit_code(strict=strict) == code


def test_refused_output_exits_1_and_says_so() -> None:
    summary = _summary("aa", refused="refusing to write")
    assert summary.exit_code() == 1
    assert "SUBMISSION NOT WRITTEN: refusing to write" in summary.describe()


def test_subject_shares_count_only_classified_cells() -> None:
    summary = _summary("aahhe")
    assert summary.subject_shares() == {"7": (2, 2), "H1": (2, 0)}
    assert summary.metrics() is None  # no true labels
    assert "ALL 2 (50.0%), HEM 2 (50.0%)" in summary.describe()


def test_failed_file_names_are_shown_escaped() -> None:
    name = "x.bmp\n  ALL 99 (100.0%)\x1b[2J.bmp"
    row = ResultRow(name, Prediction(name, "error", error="not a readable image\x1b[31m"))
    summary = PredictSummary(Path("d"), Path("p.csv"), "csv", (row,), INFO, 0.5, "default", 1.0)
    text = summary.describe()
    assert "\x1b" not in text
    assert "    x.bmp\\n  ALL 99 (100.0%)\\x1b[2J.bmp: not a readable image\\x1b[31m" in text.splitlines()
