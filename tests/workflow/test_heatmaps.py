"""Heatmap overlays: the cell and its class activation map side by side, for the cells worth a look.

SYNTHETIC cells and the tiny stand-in network.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeleuk import Classifier
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Preprocess
from edgeleuk.io.data import list_images
from edgeleuk.runtime.classifier import Prediction
from edgeleuk.workflow.heatmaps import SUFFIX, overlay_png, reasons_to_show, write_heatmaps


def _png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # RGB


def test_the_overlay_puts_the_crop_beside_its_map() -> None:
    image = np.random.default_rng(0).integers(0, 256, (450, 450, 3), dtype=np.uint8)
    cam = np.zeros((300, 300), np.float32)
    cam[:150, :150], cam[150:, 150:] = 2.0, -1.0  # ALL evidence top left, HEM bottom right
    picture = _png(overlay_png(image, cam, Preprocess(), caption="1.bmp: p=0.9"))
    assert picture.shape == (300 + 44, 2 * 300 + 8, 3)
    np.testing.assert_array_equal(picture[:300, :300], image[75:375, 75:375])  # the crop the network sees
    right = picture[:300, 308:].astype(int)
    top_left, bottom_right, blank = right[:150, :150], right[150:, 150:], right[:150, 150:]
    assert (top_left[..., 0] - top_left[..., 2]).mean() > 80  # red
    assert (bottom_right[..., 2] - bottom_right[..., 0]).mean() > 40  # blue, half as strong
    assert abs((blank[..., 0] - blank[..., 2]).mean()) < 10  # no evidence: no tint


def test_bad_shapes_are_refused() -> None:
    image = np.zeros((450, 450, 3), np.uint8)
    with pytest.raises(UsageError):
        overlay_png(image, np.zeros((200, 200)), Preprocess())
    with pytest.raises(UsageError):
        overlay_png(image, np.full((300, 300), np.nan), Preprocess())
    with pytest.raises(UsageError):
        overlay_png(image.astype(np.float32), np.zeros((300, 300)), Preprocess())


def _p(prob: float, qc: tuple[str, ...] = (), path: str | None = "a/1.bmp") -> Prediction:
    return Prediction(path=path, status="ok", prob_all=prob, label="all" if prob >= 0.5 else "hem", qc=qc,
                      cam=np.ones((300, 300), np.float32))


def test_all_calls_flagged_cells_and_near_calls_are_chosen() -> None:
    assert reasons_to_show(_p(0.9), 0.5) == ("all",)
    assert reasons_to_show(_p(0.1), 0.5) == ()
    assert reasons_to_show(_p(0.45), 0.5) == ("near",)
    assert reasons_to_show(_p(0.1, ("blur",)), 0.5) == ("flagged",)
    assert reasons_to_show(Prediction(path="x", status="error", error="bad"), 0.5) == ()


def test_write_heatmaps_writes_one_png_per_chosen_cell(tmp_path: Path) -> None:
    images = [np.zeros((450, 450, 3), np.uint8)] * 4
    predictions = [_p(0.9), _p(0.1), _p(0.2, ("blank",), path="b/1.bmp"), _p(0.95, path=None)]
    written = write_heatmaps(tmp_path / "maps", predictions, images, 0.5)
    assert [h.path.name for h in written] == ["1" + SUFFIX, "1-1" + SUFFIX, "cell00003" + SUFFIX]
    assert [h.why for h in written] == [("all",), ("flagged",), ("all",)]
    assert all(_png(h.path.read_bytes()).shape == (344, 608, 3) for h in written)


def test_heatmaps_of_a_real_classifier(tiny_onnx: Path, synth_root: Path, tmp_path: Path) -> None:
    """End to end on SYNTHETIC cells: maps from the graph, images decoded again from their files."""
    paths = list_images(synth_root / "training_data", recursive=True)[:6]
    clf = Classifier.load(tiny_onnx, "cpu", heatmaps=True)
    predictions = clf.predict_paths(paths)
    assert all(p.cam is not None for p in predictions)
    written = write_heatmaps(tmp_path, predictions, None, clf.threshold, pre=clf.meta.preprocess, near=1.0)
    assert len(written) == 6 and all(h.path.is_file() for h in written)
