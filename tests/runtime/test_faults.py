"""Engine faults are not bad input: no error rows; ``watch`` retries then stops, ``predict`` stops.

A stub engine (:class:`runtime_support.FlakyBackend`) computes the brightness model
and raises on the calls a test picks, as ONNX Runtime does when memory runs out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from runtime_support import FlakyBackend, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.errors import EngineFault
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.workflow.predict import PredictOptions, partial_path, predict
from edgeleuk.workflow.provenance import sidecar_path
from edgeleuk.workflow.watch import FaultPolicy, watch_folder

FAST = FaultPolicy(retries=4, backoff_s=0.01, max_backoff_s=0.02)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cells(folder: Path, n: int = 6) -> list[str]:
    return [write_bmp(folder / f"{k + 1}.bmp", gray_cell(40 + 30 * k, seed=k)).name for k in range(n)]


def _classifier(fail, batch_size: int = 2) -> Classifier:
    return Classifier(FlakyBackend(fail), batch_size=batch_size, workers=1)


def test_classifier_raises_engine_fault_instead_of_error_rows(tmp_path: Path) -> None:
    paths = [tmp_path / n for n in _cells(tmp_path, 3)]
    clf = _classifier(lambda call: True)
    with pytest.raises(EngineFault, match="out of memory") as fault:
        clf.predict_paths(paths)
    assert fault.value.exit_code == 1
    with pytest.raises(EngineFault):
        clf.predict_arrays(np.stack([gray_cell(100)]))


def test_wrong_output_length_is_an_engine_fault(tmp_path: Path) -> None:
    clf = _classifier(lambda call: False)
    clf.backend.run = lambda batch: (
        np.zeros(len(batch) + 1, np.float32),
        np.zeros(len(batch) + 1, np.float32),
    )
    with pytest.raises(EngineFault, match="returned 3 logit"):
        clf.predict_arrays(np.stack([gray_cell(100), gray_cell(120)]))


def test_watch_rides_out_three_faults_and_classifies_every_file(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    names = _cells(folder, 5)
    (folder / "bad.bmp").write_bytes(b"BM not a bitmap")
    clf = _classifier(lambda call: call <= 3)
    summary = watch_folder(
        folder, classifier=clf, out=out, interval=0.02, max_files=6, max_idle=30, give_up_s=0, faults=FAST
    )
    rows = {r["path"]: r for r in _rows(out)}
    assert len(_rows(out)) == 6  # one row per file, none twice
    assert all(rows[n]["status"] == "ok" for n in names), rows
    assert rows["bad.bmp"]["status"] == "error" and "inference" not in rows["bad.bmp"]["error"]
    assert (summary.classified, summary.failed) == (5, 1)
    assert clf.backend.calls > 3


def test_watch_stops_with_exit_1_after_the_bound_and_a_restart_finishes(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    names = _cells(folder, 6)
    # The engine classifies the first batch of two, then keeps failing.
    broken = _classifier(lambda call: call > 1)
    with pytest.raises(EngineFault, match="giving up after 5 engine fault") as stopped:
        watch_folder(folder, classifier=broken, out=out, interval=0.02, max_idle=30, faults=FAST)
    assert "run watch again" in str(stopped.value)
    first = _rows(out)
    assert [r["status"] for r in first] == ["ok", "ok"]  # kept, and no error row for the rest
    healthy = _classifier(lambda call: False)
    again = watch_folder(folder, classifier=healthy, out=out, interval=0.02, max_idle=0.5)
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(names)  # every file once
    assert all(r["status"] == "ok" for r in rows)
    assert (again.resumed, again.classified, again.failed) == (2, 4, 0)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = FaultPolicy(retries=9, backoff_s=1.0, max_backoff_s=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_watch_cli_exits_1_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 2)
    monkeypatch.setattr(
        Classifier, "load", classmethod(lambda cls, *args, **kwargs: _classifier(lambda call: True))
    )
    result = CliRunner().invoke(
        app,
        [
            "watch",
            str(folder),
            "--model",
            str(tmp_path / "m.onnx"),
            "--out",
            str(out),
            "--interval",
            "0.05",
            "--fault-retries",
            "2",
            "--fault-backoff",
            "0.01",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "giving up after 3 engine fault(s) in a row" in result.stderr
    assert _rows(out) == []  # header only: no error rows


def test_predict_keeps_what_it_classified_before_a_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    names = _cells(folder, 6)
    monkeypatch.setattr(
        "edgeleuk.workflow.predict.load_classifier", lambda model, options: _classifier(lambda c: c > 2)
    )
    with pytest.raises(EngineFault, match="stopped after classifying 4 of 6") as fault:
        predict(folder, model=tmp_path / "m.onnx", out=out, options=PredictOptions(progress=False))
    assert fault.value.exit_code == 1
    assert not out.exists()  # the output stays complete or absent
    rows = _rows(partial_path(out))
    assert [r["path"] for r in rows] == names[:4] and all(r["status"] == "ok" for r in rows)
    assert str(partial_path(out)) in str(fault.value)
    assert sidecar_path(partial_path(out)).is_file() and not sidecar_path(out).exists()  # its provenance


def test_predict_with_an_engine_that_always_fails_writes_no_error_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    _cells(folder, 3)
    out.write_text("an earlier run\n")
    monkeypatch.setattr(
        "edgeleuk.workflow.predict.load_classifier", lambda model, options: _classifier(lambda c: True)
    )
    result = CliRunner().invoke(
        app, ["predict", str(folder), "--model", str(tmp_path / "m.onnx"), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "nothing was written" in result.stderr
    assert out.read_text() == "an earlier run\n"
    assert not partial_path(out).exists()


def test_watch_counts_only_faults_without_progress(tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    names = _cells(folder, 8)
    # Every second engine call fails: more faults than the bound in all, but never two in a row.
    clf = _classifier(lambda call: call % 2 == 0, batch_size=1)
    policy = FaultPolicy(retries=1, backoff_s=0.01, max_backoff_s=0.01)
    summary = watch_folder(
        folder, classifier=clf, out=out, interval=0.02, max_files=8, max_idle=30, faults=policy
    )
    assert sorted(r["path"] for r in _rows(out)) == sorted(names)
    assert summary.classified == 8


class _NaNBackend(FlakyBackend):
    """The brightness engine, except that the calls ``poison`` picks return NaN (broken weights)."""

    def __init__(self, poison, value: float = float("nan")) -> None:
        super().__init__()
        self.poison, self.value = poison, value

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probs = super().run(batch)
        if self.poison(self.calls):
            logits[:], probs[:] = self.value, self.value
        return logits, probs


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 7.5])
def test_an_impossible_output_is_an_engine_fault_not_an_error_row(tmp_path: Path, value: float) -> None:
    paths = [tmp_path / n for n in _cells(tmp_path, 2)]
    clf = Classifier(_NaNBackend(lambda call: True, value), batch_size=2, workers=1)
    with pytest.raises(EngineFault, match="impossible output for 2 of 2"):
        clf.predict_paths(paths)
    with pytest.raises(EngineFault, match="not the images"):
        clf.predict_arrays(np.stack([gray_cell(100)]))


def test_predict_with_a_nan_engine_stops_and_keeps_the_partial_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    names = _cells(folder, 4)
    nan_later = Classifier(_NaNBackend(lambda call: call > 1), batch_size=2, workers=1)
    monkeypatch.setattr("edgeleuk.workflow.predict.load_classifier", lambda model, options: nan_later)
    result = CliRunner().invoke(
        app, ["predict", str(folder), "--model", str(tmp_path / "m.onnx"), "--out", str(out)]
    )
    assert result.exit_code == 1 and "impossible output" in result.stderr
    assert not out.exists()
    rows = _rows(partial_path(out))
    assert [r["path"] for r in rows] == names[:2] and all(r["status"] == "ok" for r in rows)


def test_watch_writes_no_row_for_a_nan_engine_and_a_healthy_restart_classifies_every_file(
    tmp_path: Path,
) -> None:
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    names = _cells(folder, 3)
    broken = Classifier(_NaNBackend(lambda call: True), batch_size=2, workers=1)
    with pytest.raises(EngineFault, match="giving up"):
        watch_folder(folder, classifier=broken, out=out, interval=0.02, max_idle=30, faults=FAST)
    assert _rows(out) == []  # not written off as errors
    again = watch_folder(folder, classifier=_classifier(lambda call: False), out=out, interval=0.02,
                         max_idle=0.5)
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(names) and all(r["status"] == "ok" for r in rows)
    assert (again.classified, again.failed) == (3, 0)
