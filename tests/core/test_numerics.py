"""The one sigmoid and its threshold cut: stable at any logit, inverse of each other, equal to the graph's ``prob``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeleuk.core.numerics import sigmoid, threshold_logit

F32_EPS = float(np.finfo(np.float32).eps)


@pytest.mark.filterwarnings("error")  # an overflow RuntimeWarning fails the test
def test_sigmoid_is_float32_and_quiet_at_any_logit() -> None:
    x = np.array([-np.inf, -1e308, -1000.0, -745.0, -88.0, -17.0, 0.0, 17.0, 88.0, 1000.0, 1e308, np.inf])
    p = sigmoid(x)
    assert p.dtype == np.float32 and p.shape == x.shape
    assert p[0] == 0.0 and p[-1] == 1.0 and p[6] == 0.5
    assert np.all((p >= 0.0) & (p <= 1.0)) and np.all(np.diff(p) >= 0)
    assert np.isnan(sigmoid(np.array([np.nan]))).all()
    assert sigmoid(np.float32(3.0)).dtype == np.float32  # scalars too


def test_sigmoid_is_the_correctly_rounded_float32_value() -> None:
    x = np.random.default_rng(0).normal(0.0, 8.0, 10_000)
    exact = np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))
    np.testing.assert_array_equal(sigmoid(x), exact.astype(np.float32))
    # Tiny probabilities keep their relative precision (a tanh or 1 - p form loses it).
    np.testing.assert_allclose(sigmoid(np.array([-30.0, -60.0])), np.exp([-30.0, -60.0]), rtol=2 * F32_EPS)


def test_sigmoid_agrees_with_the_graphs_sigmoid_to_float32_precision() -> None:
    """The exported graph computes ``prob`` with ONNX's Sigmoid; staged TTA computes it with :func:`sigmoid`."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["logit"], ["prob"])], "sigmoid",
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.linspace(-40.0, 40.0, 80_001, dtype=np.float32)
    prob = session.run(None, {"logit": x})[0]
    # ONNX Runtime's kernel approximates (it is off by up to about 1.5 float32 steps at 1.0).
    np.testing.assert_allclose(sigmoid(x), prob, rtol=0, atol=2 * F32_EPS)


def test_threshold_logit_ends_and_inverse() -> None:
    assert threshold_logit(0.0) == -math.inf and threshold_logit(1.0) == math.inf
    assert threshold_logit(0.5) == 0.0
    for t in (1e-300, 1e-9, 0.1, 0.3, 0.7, 0.999999, 1 - 1e-15):
        cut = threshold_logit(t)
        assert math.isfinite(cut)
        assert 1.0 / (1.0 + math.exp(-cut)) == pytest.approx(t, rel=1e-12, abs=1e-300)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("bad", [-1e-12, 1.0000001, math.nan, math.inf, -math.inf])
def test_threshold_logit_refuses_outside_0_1(bad: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_logit(bad)


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.85, 1.0])
def test_logit_cut_makes_the_same_calls_as_the_probability(threshold: float) -> None:
    """``logit >= cut`` iff ``prob >= threshold`` (exact probabilities; infinite logits included at the ends)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.0, 4.0, 5_000), [-np.inf, np.inf]])
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-x))  # float64: away from float32's saturation at 1
    np.testing.assert_array_equal(x >= threshold_logit(threshold), exact >= threshold)
