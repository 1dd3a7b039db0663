"""``serve`` returns each cell's embedding on request; the ``remote`` client scores it with its OWN OOD model.

A real :class:`ModelService` (no Ray) behind a loopback HTTP server; SYNTHETIC cells, tiny network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_server import serving_service
from runtime_support import with_ood_model

from edgeleuk import Classifier
from edgeleuk.core.contract import EMBEDDING
from edgeleuk.core.errors import EngineFault
from edgeleuk.io.data import list_images
from edgeleuk.io.imageio import decode_image
from edgeleuk.runtime import wire
from edgeleuk.serving.server import ModelService


@pytest.fixture(scope="module")
def cells(synth_root: Path) -> np.ndarray:
    return np.stack([decode_image(p).image for p in list_images(synth_root / "training_data", recursive=True)[:30]])


@pytest.fixture(scope="module")
def model(tiny_onnx: Path, cells: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_ood_model(tiny_onnx, cells, tmp_path_factory.mktemp("served") / "tiny-ood.onnx")


@contextlib.contextmanager
def serving(service: ModelService, tamper=lambda payload: payload) -> Iterator[str]:
    """``service`` on a loopback port; ``tamper`` may change each /predict/embedding answer."""
    with serving_service(service, lambda path, payload: tamper(payload) if path == wire.PREDICT_EMBEDDING
                         else payload) as url:
        yield url


@pytest.fixture(scope="module")
def service(model: Path) -> ModelService:
    return ModelService(str(model), "cpu", 1)


def test_the_server_answers_embeddings_on_request(service: ModelService, cells: np.ndarray) -> None:
    assert service.metadata()["extras"] == [EMBEDDING]
    records = service.infer_embedding(cells[:3])
    _, expected = service.clf.embed_arrays(cells[:3])
    got = np.stack([wire.decode_embedding(r["embedding"]) for r in records])
    np.testing.assert_array_equal(got, expected)
    assert all(r["status"] == "ok" and 0 <= r["prob_all"] <= 1 for r in records)


def test_remote_ood_scores_are_the_local_files(model: Path, service: ModelService, cells: np.ndarray) -> None:
    local = Classifier.load(model, "cpu").predict_arrays(cells[:5])
    with serving(service) as url:
        remote = Classifier.load(model, "remote", server=url)
        assert remote.backend.extras == (EMBEDDING,) and "OOD" not in remote.trust_note
        answers = remote.predict_arrays(cells[:5])
    np.testing.assert_allclose([a.ood_score for a in answers], [p.ood_score for p in local], rtol=1e-5)
    assert [a.qc for a in answers] == [p.qc for p in local]  # computed on this side, on the same pixels


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda r: {**r, "embedding": wire.encode_embedding(np.full(128, np.nan))}, "NaN"),
    (lambda r: {**r, "embedding": wire.encode_embedding(np.ones(7))}, "expected 128"),
    (lambda r: {**r, "embedding": "not base64!"}, "not base64"),
    (lambda r: {k: v for k, v in r.items() if k != "embedding"}, "embedding is NoneType"),
])
def test_a_bad_embedding_is_an_engine_fault(model: Path, service: ModelService, cells: np.ndarray,
                                            tamper, message: str) -> None:
    def lie(payload):
        return {**payload, "predictions": [tamper(r) for r in payload["predictions"]]}

    with serving(service, lie) as url:
        remote = Classifier.load(model, "remote", server=url)
        with pytest.raises(EngineFault, match=message):
            remote.predict_arrays(cells[:2])


def test_a_model_without_embedding_is_answered_422(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnx

    from edgeleuk.core.contract import EXTRA_OUTPUTS
    from edgeleuk.runtime.views import prune_outputs

    proto = onnx.load(str(tiny_onnx))
    prune_outputs(proto, set(EXTRA_OUTPUTS))
    onnx.save(proto, str(tmp_path / "old.onnx"))
    old = ModelService(str(tmp_path / "old.onnx"), "cpu", 1)
    assert old.metadata()["extras"] == []
    body = wire.encode_tensor(np.zeros((1, 450, 450, 3), np.uint8))
    status, payload = asyncio.run(old.respond("POST", wire.PREDICT_EMBEDDING, wire.NPY_TYPE, body, None))
    assert status == 422 and "no embedding" in payload["error"]
