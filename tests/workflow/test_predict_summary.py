"""Predict summary: exit codes and the per-subject share."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeleuk.runtime.base import BackendInfo
from edgeleuk.runtime.classifier import Prediction
from edgeleuk.workflow.outputs import ResultRow
from edgeleuk.workflow.predict import PredictSummary
from edgeleuk.workflow.provenance import Provenance, RunStamp

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


def test_exit_code_is_lenient_unless_asked_to_be_strict() -> None:
    assert _summary("ahe").exit_code() == 0  # a failed file alone does not fail the run
    assert _summary("ae").exit_code() == 0 and _summary("ae").exit_code(strict=True) == 1


def _ok(name: str, prob: float, label: str, subject: str | None = None, truth: str | None = None) -> ResultRow:
    return ResultRow(name, Prediction(name, "ok", prob_all=prob, label=label), subject, truth)


def _failed(n: int) -> tuple[ResultRow, ...]:
    return tuple(ResultRow(f"e{k}.bmp", Prediction(f"e{k}.bmp", "error", error="empty file")) for k in range(n))


RUN = Provenance(RunStamp("m-1a2b3c", 0.3, "staged", "openvino-bf16"), "1a2b3c" * 10, "tiny.onnx", {})


def test_the_summary_reads_exactly() -> None:
    """Counts, split, failures (the first ten), subjects, metrics at the run's threshold, output, model."""
    cells = (
        _ok("UID_7_1_1_all.bmp", 0.9, "all", "7", "all"),
        _ok("UID_7_2_1_all.bmp", 0.4, "all", "7", "all"),  # ALL at 0.3, not at the default 0.5
        _ok("UID_H2_1_1_hem.bmp", 0.2, "hem", "H2", "hem"),
        _ok("UID_H2_2_1_hem.bmp", 0.35, "all", "H2", "hem"),
    )
    info = BackendInfo("openvino", "openvino 2025", ("CPU", "GPU"), "bf16")
    summary = PredictSummary(Path("d"), Path("p.csv"), "csv", cells + _failed(11), info, 0.3, "override", 2.0,
                             synthetic=True, tta_note="staged TTA: 1 of 4 cells went on", provenance=RUN,
                             record=Path("p.csv.provenance.json"))
    assert summary.describe().splitlines() == [
        "SYNTHETIC data: these numbers only show that the pipeline works.",
        "classified 15 file(s) from d in 2.0 s (7.5/s) on openvino [CPU, GPU, bf16]",
        "  ok 4, failed 11",
        "  ALL 3 (75.0%), HEM 1 (25.0%) at threshold 0.3 (override)",
        "  staged TTA: 1 of 4 cells went on",
        "  failed files:",
        *(f"    e{k}.bmp: empty file" for k in range(10)),
        "    ... and 1 more (see the error column)",
        "  per subject (share of cells called ALL):",
        "    subject    cells   ALL   share",
        "    7              2     2  100.0%",
        "    H2             2     1   50.0%",
        "  metrics against the true labels (SYNTHETIC), 4 cells (2 ALL, 2 HEM):",
        "    accuracy 0.750  sensitivity 1.000  specificity 0.500  F1 (weighted) 0.733  AUC 1.000",
        "    confusion [[tn, fp], [fn, tp]] = [[1, 1], [0, 2]]",
        "wrote p.csv (csv, 15 rows)",
        "  model m-1a2b3c (tiny.onnx) on openvino-bf16, staged TTA; provenance in p.csv.provenance.json",
    ]


def test_the_summary_without_labels_subjects_or_sidecar() -> None:
    rows = (_ok("1.bmp", 0.9, "all"), *_failed(10))
    summary = PredictSummary(Path("d"), Path("p.csv"), "csv", rows, INFO, 0.5, "default", 0.0, provenance=RUN)
    assert summary.describe().splitlines() == [
        "classified 11 file(s) from d in 0.0 s (inf/s) on cpu [CPUExecutionProvider, fp32]",
        "  ok 1, failed 10",
        "  ALL 1 (100.0%), HEM 0 (0.0%) at threshold 0.5 (default)",
        "  failed files:",
        *(f"    e{k}.bmp: empty file" for k in range(10)),  # all ten: no "more" line
        "wrote p.csv (csv, 11 rows)",
        "  model m-1a2b3c (tiny.onnx) on openvino-bf16, staged TTA",
    ]
    fast = PredictSummary(Path("d"), Path("p.csv"), "csv", rows[:1], INFO, 0.5, "default", 0.5)
    assert fast.describe().splitlines()[0] == (
        "classified 1 file(s) from d in 0.5 s (2.0/s) on cpu [CPUExecutionProvider, fp32]"
    )


def test_metrics_that_are_undefined_read_n_a() -> None:
    unreadable = ResultRow("UID_7_9_1_all.bmp", Prediction("UID_7_9_1_all.bmp", "error", error="bad"), "7", "all")
    rows = (_ok("UID_H1_1_1_hem.bmp", 0.2, "hem", "H1", "hem"), _ok("UID_H1_2_1_hem.bmp", 0.7, "all", "H1", "hem"),
            unreadable)  # a failed cell's true label is not scored
    summary = PredictSummary(Path("d"), Path("p.csv"), "csv", rows, INFO, 0.5, "default", 1.0)
    assert summary.describe().splitlines()[-4:-1] == [
        "  metrics against the true labels, 2 cells (0 ALL, 2 HEM):",
        "    accuracy 0.500  sensitivity n/a  specificity 0.500  F1 (weighted) 0.667  AUC n/a",
        "    confusion [[tn, fp], [fn, tp]] = [[1, 1], [0, 0]]",
    ]


def _withheld(k: int) -> ResultRow:
    """A call ``--qc strict`` withheld: classified, flagged, no label."""
    return ResultRow(f"w{k}.bmp", Prediction(f"w{k}.bmp", "flagged", prob_all=0.9, qc=("blur",)), subject="7")


def test_a_run_whose_calls_were_all_withheld_still_exits_0() -> None:
    # Withheld calls were classified: --qc never changes the exit code (ok 1, flagged 1: not "none classified").
    one_each = _summary("a")
    one_each = PredictSummary(Path("d"), Path("p.csv"), "csv", (*one_each.rows, _withheld(1)), INFO, 0.5,
                              "default", 1.0, qc="strict")
    assert (one_each.ok, one_each.flagged, one_each.failed, one_each.exit_code()) == (1, 1, 0, 0)
    only = PredictSummary(Path("d"), Path("p.csv"), "csv", (_withheld(1), _withheld(2)), INFO, 0.5, "default", 1.0,
                          qc="strict")
    assert (only.ok, only.flagged, only.failed, only.exit_code(), only.exit_code(strict=True)) == (0, 2, 0, 0, 0)


def test_the_head_counts_withheld_calls_and_names_the_qc_mode_and_heatmaps() -> None:
    rows = (*_summary("ah").rows, _withheld(1))
    summary = PredictSummary(Path("d"), Path("p.csv"), "csv", rows, INFO, 0.5, "default", 1.0, qc="strict",
                             heatmaps="heatmaps: 1 overlay in maps/")
    lines = summary.describe().splitlines()
    assert lines[1] == "  ok 2, failed 0, flagged 1"
    assert lines[3:6] == [
        "  flagged 1 cell(s) (blur 1): no label, left out of the ALL/HEM counts and the metrics (--qc strict)",
        "    w1.bmp: blur",
        "  heatmaps: 1 overlay in maps/",
    ]
    assert _summary("ah").describe().splitlines()[1] == "  ok 2, failed 0"
    off = PredictSummary(Path("d"), Path("p.csv"), "csv", rows[:2], INFO, 0.5, "default", 1.0, qc="off")
    assert "  quality and distribution checks off (--qc off): no cell was flagged" in off.describe().splitlines()

