"""The embedding API: Classifier.load, predict_arrays, predict_paths, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from runtime_support import (
    build_onnx,
    expected_logit,
    gray_cell,
    write_bad_files,
    write_bmp,
    write_flagged_files,
)

import edgeleuk
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime.classifier import Classifier, Prediction

BACKENDS = ["cpu", "openvino"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    meta = ModelMeta(arch="seresnext_tiny", threshold=0.6, threshold_source="calibrated")
    return build_onnx(tmp_path_factory.mktemp("clf") / "tiny.onnx", meta)


def test_top_level_import() -> None:
    assert edgeleuk.Classifier is Classifier


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_arrays(model: Path, backend: str) -> None:
    clf = Classifier.load(model, backend=backend, batch_size=2)
    images = np.stack([gray_cell(level, seed=i) for i, level in enumerate((30, 150, 170, 220, 90))])
    results = clf.predict_arrays(images)
    assert [type(r) for r in results] == [Prediction] * 5
    np.testing.assert_allclose([r.logit for r in results], expected_logit(images), atol=1e-4)
    # threshold 0.6 from the metadata: prob(150) ~ 0.63 -> all, prob(90) -> hem
    assert [r.label for r in results] == ["hem", "all", "all", "all", "hem"]
    assert all(r.ok and r.path is None and r.adjustments == () for r in results)
    assert clf.threshold == pytest.approx(0.6) and clf.threshold_source == "calibrated"


def test_single_image_and_threshold_override(model: Path) -> None:
    clf = Classifier.load(model, backend="cpu", threshold=0.9)
    (only,) = clf.predict_arrays(gray_cell(170))
    assert only.label == "hem" and 0.5 < only.prob_all < 0.9
    assert clf.threshold_source == "override"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 450, 450, 3), np.float32),
        np.zeros((2, 300, 300, 3), np.uint8),
        np.zeros((450, 450), np.uint8),
    ],
)
def test_predict_arrays_rejects_arrays_off_contract(model: Path, bad: np.ndarray) -> None:
    clf = Classifier.load(model, backend="cpu")
    with pytest.raises(UsageError, match=r"expected uint8 RGB images \[N, 450, 450, 3\]"):
        clf.predict_arrays(bad)


def test_bad_options_are_usage_errors(model: Path) -> None:
    with pytest.raises(UsageError, match="unknown backend option"):
        Classifier.load(model, backend="cpu", colour="blue")
    with pytest.raises(UsageError, match="threshold must lie in"):
        Classifier.load(model, backend="cpu", threshold=1.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_paths_keeps_every_file_in_order(model: Path, tmp_path: Path, backend: str) -> None:
    good = [write_bmp(tmp_path / f"UID_{k + 1}_1_1_all.bmp", gray_cell(200, seed=k)) for k in range(3)]
    bad = write_bad_files(tmp_path)
    flagged = write_flagged_files(tmp_path)
    paths = [
        good[0],
        tmp_path / "zero.bmp",
        good[1],
        tmp_path / "missing.bmp",
        *(tmp_path / n for n in bad),
        *(tmp_path / n for n in flagged),
        good[2],
    ]
    clf = Classifier.load(model, backend=backend, batch_size=3, workers=2)
    results = clf.predict_paths(paths)
    assert [r.path for r in results] == [str(p) for p in paths]
    by_name = {Path(r.path).name: r for r in results}
    for name in [*bad, "missing.bmp"]:
        assert by_name[name].status == "error" and by_name[name].error and by_name[name].prob_all is None
    for name, adjustment in flagged.items():
        assert by_name[name].ok and any(a.startswith(adjustment) for a in by_name[name].adjustments)
    assert [by_name[p.name].subject for p in good] == ["1", "2", "3"]
    assert all(by_name[p.name].label == "all" for p in good)


def test_info_reports_selection(model: Path) -> None:
    info = Classifier.load(model, backend="cpu").info
    assert info.name == "cpu" and info.details["selection"] == "requested"


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_classifier_is_thread_safe(model: Path, backend: str) -> None:
    clf = Classifier.load(model, backend=backend, batch_size=2)
    batches = [np.stack([gray_cell(level + 3 * j, seed=j) for j in range(3)]) for level in range(10, 250, 15)]
    sequential = [clf.predict_arrays(b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(clf.predict_arrays, batches))
    assert parallel == sequential
