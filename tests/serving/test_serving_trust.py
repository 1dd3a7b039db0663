"""What one replica answers about trusting each call: qc, ood_score, and a heatmap on ``?heatmap=1``.

No Ray: :class:`ModelService` directly (as in ``test_serving_service.py``). Its classifier is the
brightness model wrapped so that dark cells come back flagged with a map, as the checks would
flag them; the overlay maker is a stand-in module with the signature of
``edgeleuk.workflow.heatmaps.overlay_png``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import sys
import types

import cv2
import numpy as np
import pytest
from runtime_support import build_onnx, gray_cell

from edgeleuk.runtime import wire
from edgeleuk.serving.server import ModelService


class Flagged:
    """The classifier, with dark cells (p < 0.5) flagged ``blank`` and out of distribution, and a map each."""

    def __init__(self, clf) -> None:
        self._clf = clf

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def predict_arrays(self, images):
        out = []
        for p in self._clf.predict_arrays(images):
            dark = p.prob_all < 0.5
            out.append(dataclasses.replace(p, qc=("blank",) if dark else (), ood_score=40.0 if dark else 2.0,
                                           ood_flag=dark, cam=np.full((300, 300), p.prob_all, np.float32)))
        return out


def overlay_png(image, cam, pre):
    """Stand-in overlay: the cell's crop beside the map in grey, as PNG bytes."""
    crop = image[75:375, 75:375, 0]
    return cv2.imencode(".png", np.concatenate([crop, (cam * 255).astype(np.uint8)], axis=1))[1].tobytes()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_onnx(tmp_path_factory.mktemp("svc-trust") / "m.onnx")


def _service(model, heatmaps: bool) -> ModelService:
    service = ModelService(str(model), "cpu", 1)
    service.clf, service.heatmaps = Flagged(service.clf), heatmaps
    return service


def ask(service, path, body, content_type=wire.NPY_TYPE):
    async def infer(image):
        return (await asyncio.to_thread(service.infer, [image]))[0]

    return asyncio.run(service.respond("POST", path, content_type, body, infer))


CELLS = wire.encode_tensor(np.stack([gray_cell(40), gray_cell(220)]))


def test_answers_carry_qc_and_ood_score_and_no_heatmap_unasked(model):
    status, answer = ask(_service(model, heatmaps=False), wire.PREDICT, CELLS)
    dark, bright = answer["predictions"]
    assert status == 200 and (dark["qc"], dark["ood_score"], dark["label"]) == (["blank", "ood"], 40.0, "hem")
    assert (bright["qc"], bright["ood_score"]) == ([], 2.0)
    assert "heatmap" not in dark and all(wire.check_trust_fields(r) is None for r in (dark, bright))


def test_a_heatmap_needs_a_server_started_with_heatmaps(model):
    status, answer = ask(_service(model, heatmaps=False), wire.PREDICT + "?heatmap=1", CELLS)
    assert status == 400 and "serve --heatmaps" in answer["error"]
    status, answer = ask(_service(model, heatmaps=True), wire.PREDICT + "?heatmap=maybe", CELLS)
    assert status == 400 and "takes 1 or 0" in answer["error"]


def test_heatmap_on_request_is_a_base64_png_per_image(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "edgeleuk.workflow.heatmaps", types.SimpleNamespace(overlay_png=overlay_png))
    service = _service(model, heatmaps=True)
    status, answer = ask(service, wire.PREDICT + "?heatmap=1", CELLS)
    assert status == 200
    for record, grey in zip(answer["predictions"], (40, 220), strict=True):
        png = cv2.imdecode(np.frombuffer(base64.b64decode(record["heatmap"]), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert png.shape == (300, 600) and abs(png[:, :300].mean() - grey) < 5  # this image's own overlay
    file_body = cv2.imencode(".png", gray_cell(220))[1].tobytes()
    status, answer = ask(service, wire.PREDICT + "?heatmap=1", file_body, "image/png")
    assert status == 200 and "heatmap" in answer["predictions"][0]
    status, answer = ask(service, wire.PREDICT + "?heatmap=0", CELLS)
    assert status == 200 and "heatmap" not in answer["predictions"][0]


def test_a_missing_map_is_an_engine_fault(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "edgeleuk.workflow.heatmaps", types.SimpleNamespace(overlay_png=overlay_png))
    service = _service(model, heatmaps=True)
    service.clf = service.clf._clf  # the plain classifier gives no map
    status, answer = ask(service, wire.PREDICT + "?heatmap=1", CELLS)
    assert status == 500 and "engine fault" in answer["error"]
