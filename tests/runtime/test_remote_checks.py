"""The ``remote`` backend's checks one by one, against a stand-in client: no socket, no server thread.

``test_remote.py`` runs the client against a fake server over loopback; here each check of
:mod:`edgeleuk.runtime.remote` gets the exact answer it must refuse or accept, and the exact
message a user (or ``watch``'s fault log) then reads.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_server import honest_metadata
from runtime_support import build_onnx

from edgeleuk.core.contract import CAM, EMBEDDING
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.core.numerics import sigmoid
from edgeleuk.runtime import remote, wire
from edgeleuk.runtime.base import BackendOptions
from edgeleuk.runtime.remote import (
    PROB_TOL,
    SERVE_FIX,
    Answer,
    RemoteBackend,
    RemoteFault,
    RemoteOptions,
    check_expected,
    check_predictions,
    server_metadata,
)

URL = "http://lab-server:8000"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("remote-checks") / "model.onnx")


# --- One field, one engine name -------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "name", "kind", "message"), [
    ({"logit": "3.0"}, "logit", (int, float), "W: field 'logit' is str '3.0', expected a number"),
    ({"prob_all": True}, "prob_all", (int, float), "W: field 'prob_all' is bool 'True', expected a number"),
    ({"file": 5}, "file", str, "W: field 'file' is int '5', expected str"),
    ({}, "model", str, "W: field 'model' is NoneType 'None', expected str"),
    ({"sha256": ["a" * 100]}, "sha256", str, f"W: field 'sha256' is list {str(['a' * 100])[:60]!r}, expected str"),
])
def test_a_field_of_the_wrong_type_is_named_with_its_value(payload: dict, name: str, kind: Any, message: str) -> None:
    with pytest.raises(RemoteFault) as caught:
        remote._field(payload, name, kind, "W")
    assert str(caught.value) == message


def test_a_field_of_the_right_type_is_returned_as_it_is() -> None:
    assert remote._field({"logit": 2}, "logit", (int, float), "W") == 2
    assert remote._field({"meta_sha256": {"a": "b"}}, "meta_sha256", dict, "W") == {"a": "b"}


@pytest.mark.parametrize("engine", ["x", "cpu-fp32", "openvino-bf16", "a" * 64, "cuda-fp16.trt:0+1_x"])
def test_engine_names_of_1_to_64_safe_characters_are_accepted(engine: str) -> None:
    assert remote._engine({"engine": engine}, "W") == engine


@pytest.mark.parametrize(("engine", "shown"), [
    ("", ""), ("a" * 65, "a" * 64), ("cpu fp32", "cpu fp32"), ("cpu\x1b[31m", "cpu\x1b[31m"), ("cpu/fp32", "cpu/fp32"),
])
def test_other_engine_names_are_refused(engine: str, shown: str) -> None:
    with pytest.raises(RemoteFault) as caught:
        remote._engine({"engine": engine}, "W")
    assert str(caught.value) == f"W: field 'engine' {shown!r} is not a backend-precision name"
    with pytest.raises(RemoteFault) as caught:
        remote._engine({"engine": 5}, "W")
    assert str(caught.value) == "W: field 'engine' is int '5', expected str"


# --- /metadata ------------------------------------------------------------------------------------


class _MetaClient:
    url = URL

    def __init__(self, answer: Answer | Exception) -> None:
        self.answer = answer

    def request(self, path: str) -> Answer:
        assert path == wire.METADATA
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


GOOD = {"model": "m", "sha256": "s", "file": "f.onnx", "engine": "cpu-fp32", "meta_sha256": {}}


@pytest.mark.parametrize(("answer", "message"), [
    (ConnectionRefusedError("refused"), f"backend remote: cannot reach {URL} (refused); {SERVE_FIX}"),
    (RemoteFault("answer over 1048576 bytes"), "backend remote: answer over 1048576 bytes; is it `edgeleuk serve`?"),
    (Answer(401, {"error": "no token"}), f"backend remote: {URL}/metadata answered 401 ('no token'); give the "
                                          "server's token with --server-token-file or EDGELEUK_TOKEN"),
    (Answer(503, {"error": "warming up"}), f"backend remote: {URL}/metadata answered 503 ('warming up'); "
                                           "is it `edgeleuk serve` and ready?"),
    (Answer(200, {"_not_json": True, "error": "<html>"}), f"backend remote: {URL}/metadata answered '<html>', "
                                                          "not a JSON object; is it `edgeleuk serve`?"),
    (Answer(200, {**GOOD, "file": None}), f"backend remote: {URL}/metadata: field 'file' is NoneType 'None', "
                                          "expected str; is it `edgeleuk serve` of this version?"),
    (Answer(200, {**GOOD, "engine": "a b"}), f"backend remote: {URL}/metadata: field 'engine' 'a b' is not a "
                                             "backend-precision name; is it `edgeleuk serve` of this version?"),
    (Answer(200, {**GOOD, "meta_sha256": []}), f"backend remote: {URL}/metadata: field 'meta_sha256' is list '[]', "
                                               "expected dict; is it `edgeleuk serve` of this version?"),
])
def test_a_server_that_is_not_a_ready_edgeleuk_serve_is_unavailable(answer: Any, message: str) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        server_metadata(_MetaClient(answer))
    assert str(caught.value) == message


def test_well_typed_metadata_is_returned_whole() -> None:
    meta = {**GOOD, "threshold": 0.5, "extra": [1]}
    assert server_metadata(_MetaClient(Answer(200, meta))) == meta


# --- The served model against the local file --------------------------------------------------------


def test_another_model_is_refused_naming_both_files(model: Path) -> None:
    digest = wire.model_sha256(model)
    other = "f" * 64
    meta = {**honest_metadata(model), "sha256": other, "model": wire.model_id(other), "file": "x" * 100}
    with pytest.raises(UsageError) as caught:
        check_expected(meta, model, {})
    assert str(caught.value) == (
        f"backend remote: the server runs {'x' * 80!r} (sha256 {other[:12]}...), not model.onnx "
        f"(sha256 {digest[:12]}...); serve that model or pass the server's file as --model"
    )
    # The right digest under another model id is no proof either.
    with pytest.raises(UsageError, match="^backend remote: the server runs 'model.onnx' "):
        check_expected({**honest_metadata(model), "model": "0" * 12}, model, {})


def test_metadata_that_differs_is_refused_naming_every_field_and_both_thresholds(model: Path) -> None:
    raw = remote.RemoteBackend.model_format(model).read_metadata(model)
    meta = honest_metadata(model)
    check_expected(meta, model, raw)  # the honest answer passes
    lie = {**meta, "threshold": "0.5000000000000000000001", "class_names": {"0": "all", "1": "hem"}}
    with pytest.raises(UsageError) as caught:
        check_expected(lie, model, raw)
    served = f"'model.onnx' (sha256 {meta['sha256'][:12]}...)"
    assert str(caught.value) == (
        f"backend remote: the server claims {served} but its metadata differs from model.onnx's in "
        "threshold, class_names (the server decides at threshold 0.500000000000000000, model.onnx at 0.5); "
        "it is not serving this file: check the server"
    )


# --- Answers to /predict ------------------------------------------------------------------------------


def _record(logit: float, prob: float | None = None, **extra: Any) -> dict[str, Any]:
    prob = float(sigmoid(logit)) if prob is None else prob
    return {"status": "ok", "logit": logit, "prob_all": prob, **extra}


@pytest.mark.parametrize(("predictions", "message"), [
    ({"0": _record(1.0)}, "W returned dict answers for 1 images"),
    (None, "W returned NoneType answers for 1 images"),
    ([], "W returned 0 answers for 1 images"),
    ([{"status": "error"}], "W: answer 0 is not an ok prediction"),
    (["ok"], "W: answer 0 is not an ok prediction"),
    ([{"status": "ok", "logit": "x", "prob_all": 0.5}], "W answer 0: field 'logit' is str 'x', expected a number"),
    ([{"status": "ok", "logit": 0.0}], "W answer 0: field 'prob_all' is NoneType 'None', expected a number"),
    ([_record(50.0, 1.5)], "W: answer 0 has logit 50.0 and probability 1.5 (not finite or outside [0, 1])"),
    ([_record(-50.0, -0.5)], "W: answer 0 has logit -50.0 and probability -0.5 (not finite or outside [0, 1])"),
    ([_record(math.inf, 1.0)], "W: answer 0 has logit inf and probability 1.0 (not finite or outside [0, 1])"),
    ([_record(0.0, 0.9)], "W: answer 0 has probability 0.9, but sigmoid(0.0) is 0.5"),
])
def test_an_answer_that_breaks_the_protocol_is_a_fault_with_its_reason(predictions: Any, message: str) -> None:
    with pytest.raises(RemoteFault) as caught:
        check_predictions({"predictions": predictions}, 1, "W")
    assert str(caught.value) == message


def test_probabilities_at_the_bounds_and_the_tolerance_are_accepted() -> None:
    # 0 and 1 are probabilities (a saturated sigmoid rounds to them in float32).
    assert check_predictions({"predictions": [_record(-30.0, 0.0), _record(30.0, 1.0)]}, 2, "W") == (
        [-30.0, 30.0], [0.0, 1.0])
    # Exactly PROB_TOL away from sigmoid(logit) is within it; a little more is not.
    s = float(sigmoid(-20.0))
    at_tol = s + PROB_TOL
    assert abs(at_tol - s) == PROB_TOL
    assert check_predictions({"predictions": [_record(-20.0, at_tol)]}, 1, "W") == ([-20.0], [at_tol])
    with pytest.raises(RemoteFault, match="has probability"):
        check_predictions({"predictions": [_record(-20.0, s + 2 * PROB_TOL)]}, 1, "W")
    logits, probs = check_predictions({"predictions": [_record(0, 0.5)]}, 1, "W")
    assert (logits, probs) == ([0.0], [0.5]) and type(logits[0]) is float


# --- The backend, with a stand-in client ------------------------------------------------------------


class _Client:
    """Answers /metadata with ``meta`` and /predict with ``reply(batch)`` (honest by default)."""

    made: list[_Client] = []

    def __init__(self, url: str, timeout: float = 60.0, token: str | None = None, ca_file: str | None = None,
                 **kw: Any) -> None:
        self.url, self.timeout, self.token, self.ca_file = url.rstrip("/"), timeout, token, ca_file
        self.meta: dict[str, Any] = {}
        self.reply: Any = None
        self.sent: list[int] = []
        self.routes: list[str] = []
        _Client.made.append(self)

    def request(self, route: str, body: bytes | None = None, content_type: str | None = None) -> Answer:
        if body is None:  # GET /metadata
            return Answer(200, self.meta)
        assert content_type == wire.NPY_TYPE, content_type
        self.routes.append(route)
        return self.predict_tensor(np.load(io.BytesIO(body), allow_pickle=False))

    def predict_tensor(self, batch: np.ndarray) -> Answer:
        self.sent.append(len(batch))
        if self.reply:
            return self.reply(batch)
        return Answer(200, honest(self.meta, batch, embedding=self.routes[-1] == wire.PREDICT_EMBEDDING))


def honest(meta: dict[str, Any], batch: np.ndarray, embedding: bool = False) -> dict[str, Any]:
    """Cell i's logit is its first pixel / 10 - 5; its embedding (when asked) ``[pixel, 1, 2]``."""
    def extra(img: np.ndarray) -> dict[str, str]:
        return {"embedding": wire.encode_embedding(np.array([img[0, 0, 0], 1, 2], np.float32))} if embedding else {}

    return {"model": meta["model"], "sha256": meta["sha256"], "engine": meta["engine"],
            "predictions": [_record(float(img[0, 0, 0]) / 10 - 5, **extra(img)) for img in batch]}


@pytest.fixture
def open_remote(model: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``open_remote(**meta_changes, **options)``: a RemoteBackend whose client is a stand-in."""
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    monkeypatch.setattr(_Client, "made", [])

    def client(*args: Any, **kw: Any) -> _Client:
        made = _Client(*args, **kw)
        made.meta = dict(opened.meta)
        return made

    class opened:  # noqa: N801 - a namespace for the metadata the next client serves
        meta: dict[str, Any] = {}

    monkeypatch.setattr(remote, "ServerClient", client)

    def open_(meta: dict[str, Any] | None = None, extras: tuple[str, ...] = (), **options: Any) -> RemoteBackend:
        opened.meta = {**honest_metadata(model), **(meta or {})}
        record = RemoteOptions(**{"server": URL, **options})
        return RemoteBackend(model, BackendOptions(engine={"remote": record}, extras=extras))

    return open_


def test_no_server_url_names_the_fix(model: Path) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        RemoteBackend(model, BackendOptions())
    assert str(caught.value) == f"backend remote needs --server URL; {SERVE_FIX}"


def test_the_client_gets_the_url_timeout_token_and_ca(open_remote: Any, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("0123456789abcdef-token\n")
    backend = open_remote(server_timeout=7.5, server_token_file=str(token), server_ca="/etc/lab-ca.pem")
    client = _Client.made[-1]
    assert (client.url, client.timeout, client.token, client.ca_file) == (
        URL, 7.5, "0123456789abcdef-token", "/etc/lab-ca.pem")
    assert backend.client is client and backend.engine == "cpu-fp32"
    token.write_text("short\n")
    with pytest.raises(UsageError, match=f"^--server-token-file {token}: the token must be at least 16 "):
        open_remote(server_token_file=str(token))


def test_batches_go_in_requests_of_at_most_max_images(open_remote: Any) -> None:
    backend = open_remote()
    batch = np.zeros((2 * wire.MAX_IMAGES + 2, 2, 2, 3), np.uint8)
    batch[:, 0, 0, 0] = np.arange(len(batch)) % 100
    logits, probs = backend.run(batch)
    assert _Client.made[-1].sent == [wire.MAX_IMAGES, wire.MAX_IMAGES, 2]
    assert logits.dtype == np.float32 and probs.dtype == np.float32
    np.testing.assert_array_equal(logits, (batch[:, 0, 0, 0] / 10 - 5).astype(np.float32))
    np.testing.assert_array_equal(probs, sigmoid(batch[:, 0, 0, 0] / 10 - 5))


def _answering(payload: dict[str, Any] | None = None, status: int = 200, **changes: Any) -> Any:
    def reply(batch: np.ndarray) -> Answer:
        if payload is not None:
            return Answer(status, payload)
        return Answer(status, {**honest(_Client.made[-1].meta, batch), **changes})
    return reply


@pytest.mark.parametrize(("reply", "message"), [
    (_answering({"error": "engine crashed"}, 500), f"server {URL} answered 500: 'engine crashed'"),
    (_answering({"_not_json": True, "error": "<html>"}), f"server {URL} answered '<html>', not a JSON object"),
    (_answering(model="m" * 30), f"server {URL} answered with model {'m' * 20!r}, not {{id}} checked at start "
                                 "(redeployed?); no row from another model"),
    (_answering(sha256="0" * 64), f"server {URL} answered with model '{{id}}', not {{id}} checked at start "
                                  "(redeployed?); no row from another model"),
    (_answering(engine="cuda-fp16"), f"server {URL} answered with engine 'cuda-fp16', not cpu-fp32 checked at start"),
    (_answering(engine="cuda fp16"), f"server {URL}: field 'engine' 'cuda fp16' is not a backend-precision name"),
    (_answering(predictions=[]), f"server {URL} returned 0 answers for 1 images"),
])
def test_a_bad_answer_mid_run_is_a_fault_with_its_reason(open_remote: Any, reply: Any, message: str) -> None:
    backend = open_remote()
    _Client.made[-1].reply = reply
    with pytest.raises(RemoteFault) as caught:
        backend.run(np.zeros((1, 2, 2, 3), np.uint8))
    assert str(caught.value) == message.format(id=wire.model_id(backend.sha256))


def test_info_names_server_model_and_engine(open_remote: Any, model: Path) -> None:
    backend = open_remote({"backend": {"engine": "onnxruntime " + "9" * 100}})
    info = backend.info()
    sha = wire.model_sha256(model)
    assert info.name == "remote" and info.precision == "fp32"
    assert info.engine == f"edgeleuk serve at {URL} ({'onnxruntime ' + '9' * 68!r}, cpu-fp32)"
    assert info.providers == (f"cpu-fp32@{URL}", f"model model.onnx sha256:{sha[:12]}")
    assert info.details == {"server": URL, "model": "model.onnx", "sha256": sha, "server_model": sha[:12],
                            "server_engine": "cpu-fp32"}
    assert backend.metadata() == remote.RemoteBackend.model_format(model).read_metadata(model)


@pytest.mark.parametrize(("meta", "engine", "precision"), [
    ({"backend": {"name": "cpu"}}, "'?'", "fp32"),
    ({"backend": "cpu"}, "'?'", "fp32"),
    ({"backend": None}, "'?'", "fp32"),
    ({"engine": "openvino-int8-fp16"}, "'fake'", "fp16"),
    ({"engine": "mystery-"}, "'fake'", "?"),
])
def test_info_of_a_server_that_says_less(open_remote: Any, meta: dict, engine: str, precision: str) -> None:
    info = open_remote(meta).info()
    assert info.engine == f"edgeleuk serve at {URL} ({engine}, {info.details['server_engine']})"
    assert info.precision == precision


def test_the_local_file_decides_even_when_the_server_file_name_differs(open_remote: Any, model: Path) -> None:
    other = build_onnx(model.parent / "other.onnx", ModelMeta(recipe="other"))
    with pytest.raises(UsageError, match=r"^backend remote: the server runs 'other.onnx' \(sha256 "):
        open_remote({"file": "other.onnx", "sha256": wire.model_sha256(other),
                     "model": wire.model_id(wire.model_sha256(other))})
    assert json.dumps(open_remote().server_meta)  # the honest answer is kept as it came


# --- Embeddings (the client scores them with its own model file's OOD model) ------------------------

SERVES_EMBEDDING = {"extras": [EMBEDDING]}


def test_embeddings_come_in_requests_of_at_most_max_images_in_order(open_remote: Any) -> None:
    backend = open_remote(SERVES_EMBEDDING, extras=(EMBEDDING,))
    assert backend.extras == (EMBEDDING,)
    batch = np.zeros((2 * wire.MAX_IMAGES + 2, 2, 2, 3), np.uint8)
    batch[:, 0, 0, 0] = np.arange(len(batch)) % 100
    logits, probs, extras = backend.run_extras(batch, (EMBEDDING,))
    client = _Client.made[-1]
    assert client.sent == [wire.MAX_IMAGES, wire.MAX_IMAGES, 2]
    assert client.routes == [wire.PREDICT_EMBEDDING] * 3
    assert logits.dtype == np.float32 and probs.dtype == np.float32 and list(extras) == [EMBEDDING]
    np.testing.assert_array_equal(logits, (batch[:, 0, 0, 0] / 10 - 5).astype(np.float32))
    np.testing.assert_array_equal(probs, sigmoid(batch[:, 0, 0, 0] / 10 - 5))
    expected = np.stack([batch[:, 0, 0, 0], np.ones(len(batch)), np.full(len(batch), 2)], axis=1)
    np.testing.assert_array_equal(extras[EMBEDDING], expected.astype(np.float32))


def test_no_extra_asked_is_a_plain_predict_call(open_remote: Any) -> None:
    backend = open_remote(SERVES_EMBEDDING, extras=(EMBEDDING,))
    batch = np.full((3, 2, 2, 3), 70, np.uint8)
    logits, probs, extras = backend.run_extras(batch, ())
    assert extras == {} and _Client.made[-1].routes == [wire.PREDICT]
    np.testing.assert_array_equal(logits, np.full(3, 2.0, np.float32))


@pytest.mark.parametrize(("meta", "asked"), [
    (SERVES_EMBEDDING, (CAM,)),  # a server never sends its heatmaps
    ({}, (EMBEDDING,)),  # an older server that serves no embedding
    ({"extras": "embedding"}, (EMBEDDING,)),  # a list, or nothing
])
def test_extras_not_opened_are_refused_before_any_request(open_remote: Any, meta: dict, asked: tuple) -> None:
    backend = open_remote(meta, extras=(EMBEDDING, CAM))
    with pytest.raises(UsageError, match=rf"^the remote backend did not open the outputs \['{asked[0]}'\]"):
        backend.run_extras(np.zeros((1, 2, 2, 3), np.uint8), asked)
    assert _Client.made[-1].routes == []


def _with_embeddings(*texts: Any) -> Any:
    def reply(batch: np.ndarray) -> Answer:
        payload = honest(_Client.made[-1].meta, batch)
        for record, text in zip(payload["predictions"], texts, strict=True):
            record["embedding"] = text
        return Answer(200, payload)
    return reply


def _vector(*values: float) -> str:
    return wire.encode_embedding(np.array(values, np.float32))


@pytest.mark.parametrize(("texts", "dim", "message"), [
    ((_vector(1, 2, 3), _vector(1, 2)), None, "answer 1: embedding has 2 values, expected 3"),
    ((_vector(1, 2), _vector(1, 2)), 3, "answer 0: embedding has 2 values, expected 3"),
    ((_vector(1, 2, 3), None), None, "answer 1: embedding is NoneType of ? characters, expected base64 float32"),
    ((_vector(1, math.nan, 3), _vector(1, 2, 3)), None, "answer 0: embedding holds NaN or infinite values"),
])
def test_a_bad_embedding_is_a_fault_naming_the_answer(open_remote: Any, texts: tuple, dim: int | None,
                                                      message: str) -> None:
    backend = open_remote(SERVES_EMBEDDING, extras=(EMBEDDING,))
    backend._dim = dim  # the local OOD model's dimension, when the model file has one
    _Client.made[-1].reply = _with_embeddings(*texts)
    with pytest.raises(RemoteFault) as caught:
        backend.run_extras(np.zeros((2, 2, 2, 3), np.uint8), (EMBEDDING,))
    assert str(caught.value) == f"server {URL}: {message}"


def test_the_embedding_length_comes_from_the_local_model_files_ood_model(
        model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeleuk.quality.ood import fit_ood

    ood = fit_ood(np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32), k=2)
    local = build_onnx(model.parent / "with-ood.onnx", ModelMeta(recipe="ood", ood=ood))
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)

    def client(*args: Any, **kw: Any) -> _Client:
        made = _Client(*args, **kw)
        made.meta = {**honest_metadata(local), **SERVES_EMBEDDING}
        return made

    monkeypatch.setattr(remote, "ServerClient", client)
    backend = RemoteBackend(local, BackendOptions(engine={"remote": RemoteOptions(server=URL)}, extras=(EMBEDDING,)))
    assert backend._dim == ood.dim == 3
    backend.client.reply = _with_embeddings(_vector(1, 2), _vector(1, 2))  # the server's own length: 2
    with pytest.raises(RemoteFault, match=r": answer 0: embedding has 2 values, expected 3$"):
        backend.run_extras(np.zeros((2, 2, 2, 3), np.uint8), (EMBEDDING,))


def test_a_wrong_count_of_answers_on_the_embedding_route_is_a_fault_naming_the_server(open_remote: Any) -> None:
    backend = open_remote(SERVES_EMBEDDING, extras=(EMBEDDING,))
    _Client.made[-1].reply = _answering(predictions=[])
    with pytest.raises(RemoteFault) as caught:
        backend.run_extras(np.zeros((2, 2, 2, 3), np.uint8), (EMBEDDING,))
    assert str(caught.value) == f"server {URL} returned 0 answers for 2 images"


def test_embeddings_of_the_local_models_dimension_pass(open_remote: Any) -> None:
    backend = open_remote(SERVES_EMBEDDING, extras=(EMBEDDING,))
    backend._dim = 3
    _Client.made[-1].reply = _with_embeddings(_vector(1, 2, 3), _vector(4, 5, 6))
    _, _, extras = backend.run_extras(np.zeros((2, 2, 2, 3), np.uint8), (EMBEDDING,))
    np.testing.assert_array_equal(extras[EMBEDDING], [[1, 2, 3], [4, 5, 6]])
