"""The parity gate's own logic (edgeleuk.exporting.gate) with stand-in engines: no export, no network.

A fake backend answers from a table of logits, so each verdict (passed, failed, skipped) and
each reason is checked on exact numbers. The end-to-end gate runs in test_exporting.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgeleuk.evaluation.parity import Parity, Thresholds
from edgeleuk.exporting import gate, load_profile
from edgeleuk.exporting.gate import (
    EngineCheck,
    GateReport,
    ReferenceOutputs,
    check_engine,
    reference_outputs,
    run_batches,
    run_gate,
)
from edgeleuk.exporting.imagesets import ImageSet

N = 6
REF = np.array([-2.0, -1.0, -0.25, 0.25, 1.0, 2.0])  # the reference's logits, one per cell
PROFILE = load_profile("cpu-fp32").replace(parity_n=N)  # max|dlogit| 1e-4, agreement 100 %, batch sizes 1 and 5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


@dataclass
class _Info:
    engine: str = "fake 1.0"
    providers: tuple[str, ...] = ("FakeCPU",)


class _Fake:
    """Answers cell i (its first pixel holds i) with ``REF[i] + offset``; ``per_batch`` adds ``batch * it``."""

    def __init__(self, offset: float = 0.0, per_batch: float = 0.0, fail: str | None = None,
                 shape: tuple[int, ...] | None = None, nan: bool = False,
                 prob_shape: tuple[int, ...] | None = None) -> None:
        self.offset, self.per_batch, self.fail, self.shape, self.nan = offset, per_batch, fail, shape, nan
        self.prob_shape = prob_shape
        self.batches: list[int] = []

    def info(self) -> _Info:
        return _Info()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fail:
            raise RuntimeError(self.fail)
        self.batches.append(len(batch))
        logit = (REF[batch[:, 0, 0, 0]] + self.offset + self.per_batch * len(batch)).astype(np.float32)
        if self.nan:
            logit[-1] = np.nan
        if self.shape is not None:
            logit = np.zeros(self.shape, np.float32)
        if self.prob_shape is not None:
            return logit, np.zeros(self.prob_shape, np.float32)
        return logit, _sigmoid(logit)


def _cells(labels: bool = True) -> ImageSet:
    images = np.zeros((N, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(N)
    return ImageSet(images, (REF > 0).astype(np.int64) if labels else None, "constructed cells", "prelim")


def _ref() -> ReferenceOutputs:
    return ReferenceOutputs(REF, _sigmoid(REF), 0.5)


def _engines(monkeypatch: pytest.MonkeyPatch, **fakes: _Fake) -> list[tuple[Path, str]]:
    """Stand-ins for the named backends; returns the (path, name) each was opened with."""
    opened: list[tuple[Path, str]] = []

    def open_backend(path: Path, name: str, **kw: object) -> _Fake:
        opened.append((path, name))
        return fakes[name]

    monkeypatch.setattr(gate, "open_backend", open_backend)
    return opened


def test_an_engine_that_matches_passes_and_is_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Fake()
    opened = _engines(monkeypatch, cpu=fake)
    check = check_engine("cpu", Path("m.onnx"), PROFILE, _cells(), _ref())
    assert opened == [(Path("m.onnx"), "cpu")]  # the file itself, as predict opens it
    assert (check.status, check.breaches, check.reason) == ("passed", [], None)
    assert check.version == "fake 1.0" and check.providers == ["FakeCPU"]
    assert check.parity.n == N and check.parity.agreement == 1.0 and check.parity.max_abs_logit_delta == 0.0
    assert check.parity.batch_max_delta == 0.0
    assert check.parity.f1_reference == 1.0 and check.parity.f1_model == 1.0  # labelled cells: F1 compared
    # All cells at the largest batch size (5: batches of 5 and 1), then the first cell alone at batch size 1.
    assert fake.batches == [5, 1, 1]


def test_logits_off_by_more_than_the_limit_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    _engines(monkeypatch, cpu=_Fake(offset=2e-4))
    check = check_engine("cpu", Path("m.onnx"), PROFILE, _cells(), _ref())
    assert check.status == "failed" and check.parity.agreement == 1.0
    assert check.breaches == ["max|dlogit| 0.0002 > 0.0001"]
    assert "FAILED" in check.line() and "breach: max|dlogit| 0.0002 > 0.0001" in check.line()


def test_a_flipped_label_fails_even_at_a_tiny_delta(monkeypatch: pytest.MonkeyPatch) -> None:
    loose = PROFILE.replace(max_abs_logit_delta=1.0)
    _engines(monkeypatch, cpu=_Fake(offset=-0.3))  # cell 3 (logit 0.25) drops below the threshold
    check = check_engine("cpu", Path("m.onnx"), loose, _cells(), _ref())
    assert check.status == "failed" and check.parity.disagreements == 1
    assert check.breaches[0].startswith("label agreement 83.33% (1/6 labels differ)")


def test_one_batch_size_has_no_batch_delta_to_break(monkeypatch: pytest.MonkeyPatch) -> None:
    _engines(monkeypatch, cpu=_Fake())
    check = check_engine("cpu", Path("m.onnx"), PROFILE.replace(batch_sizes=(5,)), _cells(), _ref())
    assert check.status == "passed" and check.parity.batch_max_delta == 0.0


def test_batch_sizes_that_disagree_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    # Batch 5 is 5e-5 off the reference (within 1e-4) but 4e-5 away from batch 1: allowed;
    # at 3e-5 per image the sizes differ by 1.2e-4 while batch 1 alone stays within the limit.
    _engines(monkeypatch, cpu=_Fake(per_batch=1e-5))
    assert check_engine("cpu", Path("m.onnx"), PROFILE, _cells(), _ref()).status == "passed"
    _engines(monkeypatch, cpu=_Fake(offset=-9e-5, per_batch=3e-5))
    check = check_engine("cpu", Path("m.onnx"), PROFILE, _cells(), _ref())
    assert check.status == "failed" and check.parity.batch_max_delta == pytest.approx(1.2e-4, rel=1e-3)
    assert any(b.startswith("batch sizes disagree") for b in check.breaches)


@pytest.mark.parametrize(("fake", "why"), [
    (_Fake(fail="engine exploded"), "RuntimeError: engine exploded"),
    (_Fake(shape=(2,)), "ValueError: output logit is float32 (2,)"),
    (_Fake(nan=True), "ValueError: output logit is float32 (5,) (finite: False), expected finite float32 [5]"),
    (_Fake(prob_shape=(1,)), "ValueError: output prob is float32 (1,)"),
])
def test_an_engine_that_cannot_run_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch, fake: _Fake,
                                                         why: str) -> None:
    _engines(monkeypatch, cpu=fake)
    check = check_engine("cpu", Path("m.onnx"), PROFILE, _cells(), _ref())
    assert check.status == "failed" and check.parity is None and why in check.reason
    assert check.breaches == [f"does not run on cpu: {check.reason}"]
    assert check.line().endswith(check.reason)


def test_an_unavailable_engine_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate.BACKENDS["openvino"], "availability", lambda: "no OpenVINO here")
    opened = _engines(monkeypatch, cpu=_Fake())
    report = run_gate(Path("m.onnx"), PROFILE, _cells(), _ref())
    assert [(c.engine, c.status) for c in report.checks] == [("cpu", "passed"), ("openvino", "skipped")]
    assert opened == [(Path("m.onnx"), "cpu")]  # a skipped engine is not opened at all
    assert report.passed and report.describe().startswith("parity gate PASSED ")  # one ran and none failed
    skipped = report.checks[1].to_dict()
    assert skipped["status"] == "skipped: no OpenVINO here" and "reason" not in skipped
    assert report.checks[1].line().strip() == "openvino         SKIPPED no OpenVINO here"


def test_the_report_records_every_engine_and_the_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    _engines(monkeypatch, cpu=_Fake(), openvino=_Fake(offset=1e-3))
    report = run_gate(Path("m.onnx"), PROFILE, _cells(labels=False), _ref())
    assert [c.status for c in report.checks] == ["passed", "failed"] and not report.passed
    record = report.to_dict()
    assert record["passed"] is False and record["n"] == N and record["labelled"] is False
    assert record["batch_sizes"] == [1, 5] and record["data"] == "constructed cells"
    assert [c["status"] for c in record["checks"]] == ["passed", "failed"]
    assert record["checks"][0]["parity"]["max_abs_logit_delta"] == 0.0 and record["checks"][0]["parity"]["n"] == N
    assert record["thresholds"]["max_abs_logit_delta"] == 1e-4
    lines = report.describe().splitlines()
    assert lines[0].startswith(f"parity gate FAILED vs the PyTorch reference on {N} cells (constructed cells); ")
    assert lines[0].endswith(PROFILE.thresholds().describe()) and lines[1].startswith("  cpu              PASSED")
    assert lines[2].startswith("  openvino         FAILED")


def test_gate_verdict_needs_every_engine_and_one_that_ran() -> None:
    def verdict(*statuses: str) -> bool:
        checks = [EngineCheck(f"e{i}", status=s) for i, s in enumerate(statuses)]
        return GateReport("cells", 4, True, Thresholds("test"), (1,), checks).passed

    assert verdict("passed", "passed") and verdict("passed", "skipped")
    assert not verdict("passed", "failed") and not verdict("failed", "passed")
    assert not verdict("skipped", "skipped") and not verdict()
    head = GateReport("cells", 4, True, Thresholds("test"), (1,), [EngineCheck("e")]).describe().splitlines()[0]
    assert head.startswith("parity gate PASSED vs the PyTorch reference on 4 cells (cells); test: ")


def test_an_engine_line_lists_every_breach_and_a_bare_skip() -> None:
    assert EngineCheck("openvino", status="skipped").line() == "  openvino         SKIPPED "
    parity = Parity(n=4, agreement=0.75, disagreements=1, max_abs_logit_delta=0.5, mean_abs_logit_delta=0.1,
                    max_abs_prob_delta=0.1)
    check = EngineCheck("cpu", status="failed", parity=parity, breaches=["one", "two"])
    assert check.line() == f"  cpu              FAILED  {parity.line()}\n    breach: one\n    breach: two"


def test_run_batches_splits_and_concatenates_in_order() -> None:
    fake = _Fake()
    logits, probs = run_batches(fake, _cells().images, 4)
    assert fake.batches == [4, 2]
    np.testing.assert_array_equal(logits, REF.astype(np.float32))
    np.testing.assert_array_equal(probs, _sigmoid(REF.astype(np.float32)))


def test_reference_labels_and_outputs() -> None:
    ref = ReferenceOutputs(np.zeros(3), np.array([0.49, 0.5, 0.51], np.float32), 0.5)
    np.testing.assert_array_equal(ref.labels, [0, 1, 1])  # at the threshold is ALL

    class _Reference:
        meta = type("M", (), {"threshold": 0.3})()

        def predict_arrays(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            logit = REF[images[:, 0, 0, 0]].astype(np.float32)
            return logit, _sigmoid(logit)

    out = reference_outputs(_Reference(), _cells())
    assert out.logits.dtype == np.float64 and out.threshold == 0.3
    np.testing.assert_array_equal(out.logits, REF)
    np.testing.assert_array_equal(out.probs, _sigmoid(REF.astype(np.float32)))


def test_an_engine_that_cannot_start_here_is_skipped_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    # A GPU wheel without a working GPU: the machine's limit, not the file's fault.
    def open_backend(path: Path, name: str, **kw: object) -> _Fake:
        raise gate.BackendUnavailable("backend cuda: no CUDA device")

    monkeypatch.setattr(gate, "open_backend", open_backend)
    check = check_engine("cpu", Path("m.onnx"), PROFILE, _cells(), _ref())
    assert (check.engine, check.status, check.reason) == ("cpu", "skipped", "backend cuda: no CUDA device")
    assert (check.parity, check.breaches, check.version) == (None, [], None)
    assert check.to_dict()["status"] == "skipped: backend cuda: no CUDA device"


def test_an_engine_that_cannot_load_the_file_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def open_backend(path: Path, name: str, **kw: object) -> _Fake:
        raise ValueError("bad graph: node 7")

    monkeypatch.setattr(gate, "open_backend", open_backend)
    check = check_engine("cpu", Path("m.onnx"), PROFILE, _cells(), _ref())
    assert (check.engine, check.status, check.reason) == ("cpu", "failed", "ValueError: bad graph: node 7")
    assert check.breaches == ["does not run on cpu: ValueError: bad graph: node 7"] and check.parity is None
    report = GateReport("cells", N, True, PROFILE.thresholds(), (1, 5), [check])
    assert not report.passed
