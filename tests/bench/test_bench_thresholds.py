"""Bench at the ends of the threshold range: a model file whose threshold is 0 or 1 must not divide by zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeleuk.bench.cases import Case, ModelFile
from edgeleuk.bench.cells import Cells
from edgeleuk.bench.report import OK, Row
from edgeleuk.bench.runner import _build_rows, _spread_note
from edgeleuk.bench.worker import Measurement
from edgeleuk.core.numerics import sigmoid

LOGITS = [-3.0, -0.5, 0.25, 2.0, 20.0]


def _measured(logits: list[float]) -> Measurement:
    return Measurement(status=OK, latency={"p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "runs": 3, "mean_ms": 1.0},
                       throughput={1: 1.0}, logits=logits, probs=sigmoid(np.asarray(logits)).tolist())


def _torch_row(logits: list[float]) -> Row:
    return Row(Case("torch", None, "fp32"), OK, measurement=_measured(logits))


@pytest.mark.filterwarnings("error")  # numpy's divide-by-zero RuntimeWarning fails the test too
@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_spread_note_at_threshold_0_and_1(threshold: float) -> None:
    notes = _spread_note([_torch_row(LOGITS)], threshold)
    assert len(notes) == 1
    note = notes[0]
    assert f"the threshold {threshold:g} calls" in note and "nan" not in note
    assert ("every cell ALL" in note) == (threshold == 0.0)


@pytest.mark.filterwarnings("error")
def test_spread_note_inside_the_range_names_the_cut_and_nearest_cell() -> None:
    note = _spread_note([_torch_row(LOGITS)], 0.5)[0]
    assert "is logit 0, nearest cell 0.25 away" in note


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_rows_of_a_model_whose_threshold_is_0_or_1(threshold: float) -> None:
    """``run_bench``'s steps after measuring: rows against the file's threshold, then the spread note."""
    mf = ModelFile(Path("m.onnx"), "onnx", "fp32", 1000, None, threshold, export={"profile": "cpu-fp32"})
    labels = np.array([0, 0, 1, 1, 1])
    cells = Cells(images=np.zeros((len(LOGITS), 2, 2, 3), np.uint8), labels=labels, source="test", synthetic=True)
    cases = [Case("torch", None, "fp32"), Case("cpu", mf.path, "fp32")]
    rows = _build_rows(cases, [_measured(LOGITS), _measured(LOGITS)], {mf.path: mf}, cells, mf.threshold)
    assert [r.status for r in rows] == [OK, OK] and rows[1].parity.agreement == 1.0
    # Threshold 0 calls every cell ALL; threshold 1 only a probability of 1: in float32 the logit 20's.
    expected = (1.0, 0.0) if threshold == 0.0 else (1 / 3, 1.0)
    assert (rows[1].metrics["sensitivity"], rows[1].metrics["specificity"]) == pytest.approx(expected)
    assert _spread_note(rows, mf.threshold)
