"""The server's routing and status codes, without Ray: what one replica answers to each request.

The Ray Serve deployment only adds batching and HTTP around :meth:`ModelService.respond`;
end-to-end tests through a real server are in ``test_ray.py`` (slow).
"""

from __future__ import annotations

import asyncio
import json

import cv2
import numpy as np
import pytest
from runtime_support import build_onnx, expected_logit, gray_cell

from edgeleuk.runtime import wire
from edgeleuk.serving.server import ModelService


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    return ModelService(str(build_onnx(tmp_path_factory.mktemp("svc") / "m.onnx")), "cpu", 1)


def ask(service, method, path, content_type=None, body=b""):
    async def infer(image):
        return (await asyncio.to_thread(service.infer, [image]))[0]

    return asyncio.run(service.respond(method, path, content_type, body, infer))


def test_routes_answer_health_metadata_and_predictions(service):
    status, health = ask(service, "GET", wire.HEALTH)
    assert status == 200 and health["model"] == wire.model_id(health["sha256"]) and health["engine"] == "cpu-fp32"
    status, meta = ask(service, "GET", wire.METADATA)
    assert status == 200 and meta["threshold"] == 0.5 and meta["class_names"] == {"0": "hem", "1": "all"}
    assert "edgeleuk.meta" in meta["meta_sha256"] and meta["sha256"] == service.model["sha256"]
    cells = np.stack([gray_cell(60), gray_cell(200)])
    status, answer = ask(service, "POST", wire.PREDICT, wire.NPY_TYPE, wire.encode_tensor(cells))
    assert status == 200 and (answer["model"], answer["engine"]) == (service.model["model"], "cpu-fp32")
    logits = [p["logit"] for p in answer["predictions"]]
    np.testing.assert_allclose(logits, expected_logit(cells), atol=1e-5)
    assert [p["label"] for p in answer["predictions"]] == ["hem", "all"]
    small = cv2.imencode(".png", np.full((300, 300), 200, np.uint8))[1].tobytes()
    status, answer = ask(service, "POST", wire.PREDICT, "image/png", small)
    (one,) = answer["predictions"]
    assert status == 200 and one["adjustments"] == ["converted:gray", "padded:300x300->450x450"]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "message"),
    [
        ("text/plain", b"hello", 415, "unsupported content type"),
        (wire.NPY_TYPE, b"", 400, "empty request body"),
        (wire.NPY_TYPE, b"not numpy", 400, "not a readable .npy"),
        (wire.NPY_TYPE, wire.encode_tensor(np.zeros((2, 10, 10, 3), np.uint8)), 422, "expected uint8"),
        (wire.NPY_TYPE, wire.encode_tensor(np.zeros((1, 450, 450, 3), np.float32)), 422, "expected uint8"),
        (wire.NPY_TYPE, wire.encode_tensor(np.zeros((0, 450, 450, 3), np.uint8)), 422, "1 to"),
        ("application/octet-stream", b"", 400, "empty request body"),
        ("application/octet-stream", b"BM not really", 422, "not a readable image"),
    ],
)
def test_bad_requests_get_4xx_with_a_reason(service, content_type, body, status, message):
    got, answer = ask(service, "POST", wire.PREDICT, content_type, body)
    assert got == status and message in answer["error"]


def test_too_many_images_is_413(service):
    many = np.zeros((wire.MAX_IMAGES + 1, 450, 450, 3), np.uint8)
    status, answer = ask(service, "POST", wire.PREDICT, wire.NPY_TYPE, wire.encode_tensor(many))
    assert status == 413 and str(wire.MAX_IMAGES) in answer["error"]


def test_unknown_route_is_404(service):
    status, answer = ask(service, "GET", "/predictions")
    assert status == 404 and wire.PREDICT in answer["error"]


def test_engine_fault_is_500_never_an_answer(tmp_path):
    # gain NaN: the engine returns NaN for every cell, a fault of the model, not of the request.
    broken = ModelService(str(build_onnx(tmp_path / "nan.onnx", gain=float("nan"))), "cpu", 1)
    status, answer = ask(broken, "POST", wire.PREDICT, wire.NPY_TYPE, wire.encode_tensor(gray_cell(90)))
    assert status == 500 and "engine fault" in answer["error"] and "predictions" not in answer


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A ``.npy`` header alone: what a client may send to make the server allocate."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_a_npy_header_declaring_a_huge_array_is_refused_before_allocation(service):
    # 100,000 cells would be 56.6 GiB; before, numpy tried to allocate them (500 "Unable to allocate").
    status, answer = ask(service, "POST", wire.PREDICT, wire.NPY_TYPE, npy_header("|u1", (100_000, 450, 450, 3)))
    assert status == 413 and "100000" in answer["error"]
    status, answer = ask(service, "POST", wire.PREDICT, wire.NPY_TYPE, npy_header("<f8", (64, 450, 450, 3)))
    assert status == 422 and "expected uint8" in answer["error"]
    status, answer = ask(service, "POST", wire.PREDICT, wire.NPY_TYPE, npy_header("|O", (1, 450, 450, 3)))
    assert status == 422 and "object" in answer["error"]  # pickled objects: never loaded
    short = wire.encode_tensor(gray_cell(90)[None])[:-10]
    status, answer = ask(service, "POST", wire.PREDICT, wire.NPY_TYPE, short)
    assert status == 400 and "data bytes" in answer["error"]


def test_no_answer_names_a_local_path(tmp_path):
    from edgeleuk.core.meta import ModelMeta

    secret = str(tmp_path / "private-calibration-data")
    meta = ModelMeta(threshold=0.4, threshold_source=f"calibrated: sensitivity>=0.95 on {secret}",
                     extra={"calibration": {"data": secret}})
    calibrated = ModelService(str(build_onnx(tmp_path / "cal.onnx", meta)), "cpu", 1)
    answers = [ask(calibrated, "GET", path)[1] for path in (wire.HEALTH, wire.METADATA, "/nowhere")]
    answers.append(ask(calibrated, "POST", wire.PREDICT, "text/plain", b"x")[1])
    broken = ModelService(str(build_onnx(tmp_path / "nan.onnx", gain=float("nan"))), "cpu", 1)
    answers.append(ask(broken, "POST", wire.PREDICT, wire.NPY_TYPE, wire.encode_tensor(gray_cell(90)))[1])
    text = json.dumps(answers)
    assert str(tmp_path) not in text and "private-calibration-data" not in text
    assert answers[1]["threshold"] == 0.4 and "edgeleuk.meta" in answers[1]["meta_sha256"]
