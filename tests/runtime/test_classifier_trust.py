"""Classifier: QC reasons, OOD score and flag, heatmaps; what an older model lacks is said once.

SYNTHETIC cells and the tiny stand-in network throughout.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from runtime_support import with_ood_model

from edgeleuk import Classifier, quality
from edgeleuk.core.contract import CAM, EMBEDDING, EXTRA_OUTPUTS
from edgeleuk.core.errors import EngineFault
from edgeleuk.core.numerics import sigmoid
from edgeleuk.io.data import list_images
from edgeleuk.io.imageio import decode_image
from edgeleuk.runtime.registry import backend_options, choose_backend
from edgeleuk.runtime.staged import StageChoice, StagedRunner, run_staged_extras


@pytest.fixture(scope="module")
def cells(synth_root: Path) -> np.ndarray:
    return np.stack([decode_image(p).image for p in list_images(synth_root / "training_data", recursive=True)[:40]])


@pytest.fixture(scope="module")
def with_ood(tiny_onnx: Path, cells: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with an OOD model fitted on 40 SYNTHETIC cells' embeddings (as calibrate does)."""
    return with_ood_model(tiny_onnx, cells, tmp_path_factory.mktemp("ood") / "tiny-ood.onnx")


@pytest.fixture(scope="module")
def old_model(with_ood: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file as exported before the extra outputs existed (but carrying an OOD model)."""
    import onnx

    from edgeleuk.runtime.views import prune_outputs

    proto = onnx.load(str(with_ood))
    prune_outputs(proto, set(EXTRA_OUTPUTS))
    out = tmp_path_factory.mktemp("old") / "old.onnx"
    onnx.save(proto, str(out))
    return out


def test_a_model_without_ranges_or_ood_uses_defaults_and_says_so(tiny_onnx: Path, cells: np.ndarray) -> None:
    clf = Classifier.load(tiny_onnx, "cpu")
    assert "default ranges" in clf.trust_note and "no OOD model" in clf.trust_note
    assert clf.trust.fetch == ()  # nothing extra fetched: no OOD model, no heatmaps
    predictions = clf.predict_arrays(cells[:4])
    assert all(p.ood_score is None and not p.ood_flag and p.cam is None for p in predictions)
    assert [p.qc for p in predictions] == [quality.assess(c, quality.DEFAULT_QUALITY, clf.meta.preprocess)
                                           for c in cells[:4]]
    [blank] = clf.predict_arrays(np.zeros((450, 450, 3), np.uint8))
    assert blank.ok and "blank" in blank.qc and blank.flagged and blank.prob_all is not None
    [unchecked] = Classifier.load(tiny_onnx, "cpu", qc=False).predict_arrays(np.zeros((450, 450, 3), np.uint8))
    assert unchecked.qc == () and not unchecked.flagged


@pytest.mark.parametrize("engine", ["cpu", "openvino"])
def test_ood_score_comes_from_the_models_own_ood_model(with_ood: Path, cells: np.ndarray, engine: str) -> None:
    clf = Classifier.load(with_ood, engine)
    assert "OOD" not in clf.trust_note and clf.trust.fetch == (EMBEDDING,)
    odd = np.full((450, 450, 3), 255, np.uint8)  # nothing like a stained cell
    predictions = clf.predict_arrays(np.concatenate([cells[:3], odd[None]]))
    backend = choose_backend(with_ood, engine, dataclasses.replace(backend_options(), extras=(EMBEDDING,)))[0]
    _, _, extras = backend.run_extras(np.concatenate([cells[:3], odd[None]]), (EMBEDDING,))
    expected = quality.ood_scores(clf.meta.ood, extras[EMBEDDING])
    np.testing.assert_allclose([p.ood_score for p in predictions], expected, rtol=1e-5)
    assert [p.ood_flag for p in predictions] == list(expected > clf.meta.ood.threshold)
    assert predictions[3].ood_flag and predictions[3].flagged


def test_heatmaps_only_when_asked(with_ood: Path, cells: np.ndarray) -> None:
    clf = Classifier.load(with_ood, "cpu", heatmaps=True)
    assert clf.trust.fetch == (EMBEDDING, CAM)
    [p] = clf.predict_arrays(cells[:1])
    assert p.cam.shape == (300, 300) and p.cam.dtype == np.float32 and np.isfinite(p.cam).all()
    assert Classifier.load(with_ood, "cpu").predict_arrays(cells[:1])[0].cam is None
    assert dataclasses.replace(p, cam=None) == p  # the map takes no part in equality


def test_an_old_model_loads_and_says_once_what_it_lacks(old_model: Path, cells: np.ndarray,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        clf = Classifier.load(old_model, "cpu", heatmaps=True)
        predictions = clf.predict_arrays(cells[:3])
    assert "no 'embedding' output" in clf.trust_note and "no 'cam' output" in clf.trust_note
    assert sum("no 'embedding' output" in r.getMessage() for r in caplog.records) == 1
    assert all(p.ok and p.ood_score is None and p.cam is None for p in predictions)


class _BrokenExtras:
    """A backend whose embedding is NaN: an engine fault, never a row."""

    name = "broken"
    extras = (EMBEDDING,)

    def __init__(self, real) -> None:
        self.real, self.model_path = real, real.model_path

    def metadata(self):
        return self.real.metadata()

    def graph_io(self):
        return self.real.graph_io()

    def info(self):
        return self.real.info()

    def run_extras(self, batch, names):
        logits, probs, extras = self.real.run_extras(batch, names)
        extras[EMBEDDING][0, 0] = np.nan
        return logits, probs, extras


def test_a_non_finite_embedding_is_an_engine_fault(with_ood: Path, cells: np.ndarray) -> None:
    real = choose_backend(with_ood, "cpu", dataclasses.replace(backend_options(), extras=(EMBEDDING,)))[0]
    clf = Classifier(_BrokenExtras(real))
    with pytest.raises(EngineFault, match="non-finite 'embedding'"):
        clf.predict_arrays(cells[:2])


def test_staged_extras_are_the_full_ones_for_cells_that_went_on(tiny_onnx: Path, cells: np.ndarray) -> None:
    options = dataclasses.replace(backend_options(), extras=(EMBEDDING, CAM), views_input=True)
    backend = choose_backend(tiny_onnx, "cpu", options)[0]
    full_logits, _, full = backend.run_extras(cells[:6], (EMBEDDING, CAM))
    stage1 = backend.run_views(cells[:6], np.array([0, 4]))[0]
    t_logit = float(np.median(full_logits))
    margin = float(np.median(np.abs(stage1 - t_logit)))  # about half the cells go on
    choice = StageChoice(views=(0, 4), margin=margin, threshold=float(1 / (1 + np.exp(-t_logit))), rotations=8,
                         target_agreement=0.995, agreement=1.0, stop_share=0.5, expected_views=5.0, cells=6,
                         sensitivity_full=1.0, sensitivity_staged=1.0)
    for names in ((EMBEDDING,), (EMBEDDING, CAM)):
        logits, went_on, extras = run_staged_extras(backend.run_views_extras, cells[:6], choice, names)
        assert went_on.any() and (~went_on).any()
        on = went_on
        np.testing.assert_allclose(logits[on], full_logits[on], atol=1e-5)
        np.testing.assert_allclose(extras[EMBEDDING][on], full[EMBEDDING][on], atol=1e-5)
        _, _, first = backend.run_views_extras(cells[:6], np.array([0, 4]), names)
        np.testing.assert_allclose(extras[EMBEDDING][~on], first[EMBEDDING][~on], atol=1e-6)
        if CAM in names:
            np.testing.assert_allclose(extras[CAM][on], full[CAM][on], atol=1e-5)
            np.testing.assert_allclose(extras[CAM][~on], first[CAM][~on], atol=1e-6)


def test_the_staged_runner_gives_the_staged_extras_and_counts_the_cells_that_went_on(
        tiny_onnx: Path, cells: np.ndarray) -> None:
    options = dataclasses.replace(backend_options(), extras=(EMBEDDING,), views_input=True)
    backend = choose_backend(tiny_onnx, "cpu", options)[0]
    full_logits = backend.run_extras(cells[:6], (EMBEDDING,))[0]
    stage1 = backend.run_views(cells[:6], np.array([0, 4]))[0]
    t_logit = float(np.median(full_logits))
    choice = StageChoice(views=(0, 4), margin=float(np.median(np.abs(stage1 - t_logit))),
                         threshold=float(sigmoid(t_logit)), rotations=8, target_agreement=0.995, agreement=1.0,
                         stop_share=0.5, expected_views=5.0, cells=6, sensitivity_full=1.0, sensitivity_staged=1.0)
    runner = StagedRunner(backend.run_views, choice)
    logits, probs, extras = runner.with_extras(backend.run_views_extras, cells[:6], (EMBEDDING,))
    want_logits, went_on, want = run_staged_extras(backend.run_views_extras, cells[:6], choice, (EMBEDDING,))
    assert went_on.any() and (~went_on).any()
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(probs, sigmoid(want_logits))
    np.testing.assert_array_equal(extras[EMBEDDING], want[EMBEDDING])
    assert (runner.counts.cells, runner.counts.stage2) == (6, int(went_on.sum()))
    runner.with_extras(backend.run_views_extras, cells[:2], (EMBEDDING,))
    assert runner.counts.cells == 8

