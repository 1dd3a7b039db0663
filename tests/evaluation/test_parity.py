"""edgeleuk.evaluation.parity: the one comparison and report export and bench share; thresholds from profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeleuk.core.errors import ConfigError
from edgeleuk.evaluation.parity import Parity, Thresholds, breaches, compare, normalise_precision, recorded_thresholds


def _sig(x):
    return 1 / (1 + np.exp(-x))


def test_compare_counts_label_disagreements_and_deltas():
    ref_logit = np.array([-2.0, -0.1, 0.1, 3.0])
    row_logit = ref_logit + np.array([0.0, 0.2, 0.0, -0.5])
    p = compare(ref_logit, _sig(ref_logit), row_logit, _sig(row_logit), threshold=0.5)
    assert (p.n, p.disagreements) == (4, 1)
    assert p.agreement == pytest.approx(0.75)
    assert p.max_abs_logit_delta == pytest.approx(0.5)
    assert p.mean_abs_logit_delta == pytest.approx(0.7 / 4)
    assert p.max_abs_prob_delta == pytest.approx(abs(_sig(0.1) - _sig(-0.1)), rel=1e-6)
    assert p.f1_model is None and p.batch_max_delta is None


def test_compare_gives_f1_with_labels():
    ref = np.array([-2.0, -1.0, 1.0, 2.0])
    p = compare(ref, _sig(ref), -ref, _sig(-ref), 0.5, labels=np.array([0, 0, 1, 1]))
    assert p.f1_reference == pytest.approx(1.0) and p.f1_model == pytest.approx(0.0)


def test_compare_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        compare(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(2), 0.5)


@pytest.mark.parametrize("spelling,canonical", [
    ("fp32", "fp32"), ("float32", "fp32"), ("FP16", "fp16"), ("bf16", "bf16"), ("int8", "int8"),
    ("int8-mixed", "int8"), (None, "fp32"), ("weird", "fp32"),
])
def test_normalise_precision(spelling, canonical):
    assert normalise_precision(spelling) == canonical


def _parity(n: int, wrong: int, dlogit: float = 0.0, f1: float | None = None, ref_f1: float | None = None,
            batch: float | None = None) -> Parity:
    return Parity(n=n, agreement=(n - wrong) / n, disagreements=wrong, max_abs_logit_delta=dlogit,
                  mean_abs_logit_delta=dlogit, max_abs_prob_delta=0.0, f1_reference=ref_f1, f1_model=f1,
                  batch_max_delta=batch)


def _profile(name: str, compute: str | None = None) -> Thresholds:
    return recorded_thresholds({"profile": name}, compute)


def test_fp32_profile_demands_every_label_and_tiny_logit_deltas():
    limits = _profile("cpu-fp32")
    assert breaches(limits, _parity(1000, 0, 5e-5)) == []
    assert any("agreement" in f for f in breaches(limits, _parity(1000, 1, 0.0)))
    assert any("dlogit" in f for f in breaches(limits, _parity(10, 0, 2e-4)))
    assert any("batch sizes" in f for f in breaches(limits, _parity(10, 0, 0.0, batch=2e-4)))


def test_fp16_profile_and_bf16_compute_allow_half_a_percent():
    for limits in (_profile("cuda-fp16"), _profile("cpu-fp32", "bf16")):
        assert breaches(limits, _parity(200, 1, 0.3)) == []  # 99.5% exactly, logit delta not gated
        assert breaches(limits, _parity(200, 2)) != []
        assert breaches(limits, _parity(32, 1)) != []  # 96.9%: one flip among few cells already fails


def test_int8_profile_checks_agreement_and_f1_drop():
    limits = _profile("openvino-int8")
    assert breaches(limits, _parity(100, 1, f1=0.90, ref_f1=0.904)) == []
    assert any("F1 drop" in f for f in breaches(limits, _parity(100, 0, f1=0.89, ref_f1=0.90)))
    assert breaches(limits, _parity(100, 2)) != []
    assert breaches(limits, _parity(100, 0, f1=None, ref_f1=0.9)) == []  # no labels: F1 not gated


def test_thresholds_describe_their_source_and_limits():
    text = Thresholds("cpu-fp32", 1.0, 1e-4).describe()
    assert text == "cpu-fp32: agreement >= 100.0%, max|dlogit| <= 0.0001"
    assert "F1 drop <= 0.5 point" in _profile("openvino-int8").describe()
    assert _profile("cpu-fp32", "bf16").name == "cpu-fp32 computed in bf16"


def test_recorded_profile_wins_over_the_file_of_that_name():
    recorded = {"profile": {"name": "cpu-fp32", "min_agreement": 0.9, "max_abs_logit_delta": None}}
    assert recorded_thresholds(recorded) == Thresholds("cpu-fp32", 0.9)
    # A record without a [compute.bf16] table (older export): the profile file of that name has one.
    assert recorded_thresholds(recorded, "bf16").min_agreement == 0.995


def test_unknown_profile_falls_back_to_the_default_profile_file():
    assert recorded_thresholds({"profile": "hand-built"}) == _profile("cpu-fp32")
    assert recorded_thresholds({}) == _profile("cpu-fp32")


def test_missing_compute_thresholds_are_a_config_error():
    with pytest.raises(ConfigError, match=r"\[compute.fp8\]"):
        recorded_thresholds({"profile": "cpu-fp32"}, "fp8")


def test_report_is_rounded_and_json_able():
    ref, out = np.array([0.123456789]), np.array([0.0])
    p = compare(ref, _sig(ref), out, _sig(out), 0.5)
    d = p.to_dict()
    assert d["max_abs_logit_delta"] == 0.123457 and d["n"] == 1
    json.dumps(d)
