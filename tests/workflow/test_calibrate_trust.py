"""``calibrate`` fits the quality ranges and the OOD model on the calibration cells and stores both.

SYNTHETIC cells and the tiny stand-in network; figures from them say nothing about real cells.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeleuk import Classifier, quality
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.workflow.calibrate import calibrate_model, load_labelled


@pytest.fixture(scope="module")
def cal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SYNTHETIC set whose labelled prelim split holds 36 cells: enough for both fits (20 each)."""
    from edgeleuk.synth.dataset import make_synthetic

    root = tmp_path_factory.mktemp("cal")
    make_synthetic(root, subjects=10, cells_per_subject=12, seed=1)
    return root


def test_calibrate_stores_fitted_ranges_and_ood_model(tiny_onnx: Path, cal_root: Path, tmp_path: Path) -> None:
    synth_root = cal_root
    model = tmp_path / "tiny.onnx"  # a random network: the threshold is kept (sensitivity None), the fits are the point
    shutil.copy(tiny_onnx, model)
    result = calibrate_model(model, synth_root, sensitivity=None, out=tmp_path / "cal.onnx", backend="cpu",
                             allow_small=True)
    meta, _ = read_model_meta(result.out)
    _, records = load_labelled(synth_root)
    assert meta.quality is not None and meta.quality.source.startswith("calibrate:")
    assert meta.ood is not None and meta.ood.n_cells == len(records) - result.n_failed
    assert meta.quality == result.quality and meta.ood == result.ood
    assert "quality ranges fitted" in result.describe() and "OOD model fitted" in result.describe()
    # The stored OOD model is what the classifier scores with; the calibration cells mostly pass it.
    clf = Classifier.load(result.out, "cpu")
    assert clf.trust_note == ""
    predictions = clf.predict_paths([r.path for r in records])
    scores = np.array([p.ood_score for p in predictions])
    assert np.isfinite(scores).all() and np.mean([p.ood_flag for p in predictions]) <= 0.1
    odd = clf.predict_arrays(np.full((1, 450, 450, 3), 255, np.uint8))[0]
    assert odd.ood_flag


def test_a_graph_without_embedding_keeps_the_previous_ood_model(tiny_onnx: Path, cal_root: Path,
                                                                 tmp_path: Path) -> None:
    synth_root = cal_root
    import onnx

    from edgeleuk.core.contract import EXTRA_OUTPUTS
    from edgeleuk.runtime.views import prune_outputs

    proto = onnx.load(str(tiny_onnx))
    prune_outputs(proto, set(EXTRA_OUTPUTS))
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    result = calibrate_model(old, synth_root, sensitivity=None, out=tmp_path / "cal.onnx", backend="cpu",
                             allow_small=True)
    meta, _ = read_model_meta(result.out)
    assert meta.ood is None and "OOD model not fitted" in result.describe()
    assert meta.quality is not None  # the pixels need no graph output
    assert quality.DEFAULT_QUALITY != meta.quality
