"""``remote`` backend: the engine runs in ``edgeleuk serve`` on another machine.

A small microscope PC decodes its files as always and sends uint8 tensors to the lab's server
(:mod:`edgeleuk.runtime.wire`); ``predict``, ``watch``, ``report``, ``bench`` and the Python API
work unchanged. It follows the runtime's rules:

* explicit only (``auto`` never picks it): ``--backend remote --server URL --model FILE``, or
  ``Classifier.load(FILE, "remote", server=URL)``; an unreachable or unready server, or no
  ``--server``, is a :class:`BackendUnavailable` naming the fix (exit 2), never a silent switch
  to local inference;
* it trusts only its own model file: labels, threshold, class names and any stage choice come
  from the local ``--model``; before the first image the server's ``/metadata`` must describe
  exactly that file (SHA-256, the digest of every metadata string, threshold, class names,
  precision, input size), else exit 2;
* every answer is checked field by field (the model that gave it, one record per image, finite
  ``0 <= p <= 1`` with ``p = sigmoid(logit)``); a breach is an engine fault (``watch`` retries,
  ``predict`` stops with exit 1 and keeps ``.partial.csv``), never a row;
* the OOD score is computed here: the server returns each cell's ``embedding``
  (``POST /predict/embedding``) and the classifier scores it with the LOCAL file's OOD model;
  quality checks run here on the decoded pixels, as for a local backend;
* HTTP through urllib3: a bearer token (``--server-token-file`` or ``EDGELEUK_TOKEN``), verified
  certificates (``--server-ca``), answers capped at :data:`~edgeleuk.runtime.wire.MAX_ANSWER`
  bytes, one deadline per request (:mod:`edgeleuk.runtime.httpclient`), no redirects.

No Ray, no engine, no torch on the client.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.contract import EMBEDDING
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.core.numerics import sigmoid
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime import wire
from edgeleuk.runtime.base import Backend, BackendInfo, BackendOptions, ExtrasResult, OptionsRecord, option
from edgeleuk.runtime.httpclient import Answer, RemoteFault, ServerClient

__all__ = ["Answer", "RemoteBackend", "RemoteFault", "RemoteOptions", "ServerClient", "check_expected"]

log = logging.getLogger(__name__)

SERVE_FIX = "start one with `edgeleuk serve -m MODEL` (needs the ray extra) and pass its URL as --server"
#: How far an answer's probability may sit from sigmoid(logit): float32 rounding, with room.
PROB_TOL = 1e-5
#: Engine names a server may report: backend-precision, nothing a terminal would interpret.
_ENGINE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:+-")


def _field(payload: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``payload[name]`` if it is of ``kind`` (a boolean is no number here), else a clear fault."""
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise RemoteFault(f"{where}: field {name!r} is {type(value).__name__} {str(value)[:60]!r}, "
                          f"expected {getattr(kind, '__name__', 'a number')}")
    return value


def _engine(payload: dict[str, Any], where: str) -> str:
    engine = _field(payload, "engine", str, where)
    if not 0 < len(engine) <= 64 or not set(engine) <= _ENGINE_CHARS:
        raise RemoteFault(f"{where}: field 'engine' {engine[:64]!r} is not a backend-precision name")
    return engine


def server_metadata(client: ServerClient) -> dict[str, Any]:
    """The server's ``/metadata``, its identity fields type-checked.

    Raises:
        BackendUnavailable: Unreachable, not ready, not an edgeleuk server, or an answer that is
            not JSON or has fields of the wrong type (exit 2, names the fix).
    """
    where = f"{client.url}{wire.METADATA}"
    try:
        answer = client.request(wire.METADATA)
    except OSError as exc:
        raise BackendUnavailable(f"backend remote: cannot reach {client.url} ({exc}); {SERVE_FIX}") from exc
    except RemoteFault as exc:
        raise BackendUnavailable(f"backend remote: {exc}; is it `edgeleuk serve`?") from exc
    if answer.status != 200:
        raise BackendUnavailable(
            f"backend remote: {where} answered {answer.status} ({answer.error}); "
            + ("give the server's token with --server-token-file or EDGELEUK_TOKEN" if answer.status == 401
               else "is it `edgeleuk serve` and ready?")
        )
    meta = answer.payload
    if meta.get("_not_json"):
        raise BackendUnavailable(f"backend remote: {where} answered {answer.error}, not a JSON object; "
                                 "is it `edgeleuk serve`?")
    try:
        for name in ("model", "sha256", "file"):
            _field(meta, name, str, where)
        _engine(meta, where)
        _field(meta, "meta_sha256", dict, where)
    except RemoteFault as exc:
        raise BackendUnavailable(f"backend remote: {exc}; is it `edgeleuk serve` of this version?") from exc
    return meta


def check_expected(meta: dict[str, Any], expected: Path, raw: dict[str, str]) -> None:
    """Refuse a server whose model is not ``expected`` (the local copy named by ``--model``), exactly.

    Args:
        meta: The server's ``/metadata`` (identity fields already type-checked).
        expected: The local model file.
        raw: ``expected``'s own ``edgeleuk.*`` strings.

    Raises:
        UsageError: Another SHA-256, or metadata that differs from the local file's in any string,
            threshold, class names, precision or input size; the message names both.
    """
    digest = wire.model_sha256(expected)
    served = f"{str(meta['file'])[:80]!r} (sha256 {str(meta['sha256'])[:12]}...)"
    if meta["sha256"] != digest or meta["model"] != wire.model_id(digest):
        raise UsageError(
            f"backend remote: the server runs {served}, not {expected.name} (sha256 {digest[:12]}...); "
            "serve that model or pass the server's file as --model"
        )
    local, export = read_model_meta(expected)
    want = {
        "meta_sha256": wire.metadata_digests(raw),
        "threshold": local.threshold,
        "class_names": {str(k): v for k, v in local.class_names.items()},
        "precision": export.get("precision"),
        "input_size": local.preprocess.input_size,
    }
    differ = [name for name, value in want.items() if meta.get(name) != value]
    if differ:
        got = meta.get("threshold")
        raise UsageError(
            f"backend remote: the server claims {served} but its metadata differs from {expected.name}'s in "
            f"{', '.join(differ)} (the server decides at threshold {str(got)[:20]}, {expected.name} at "
            f"{local.threshold}); it is not serving this file: check the server"
        )


@dataclass(frozen=True)
class RemoteOptions(OptionsRecord):
    """What only the ``remote`` backend can be asked.

    Attributes:
        server: Base URL of an ``edgeleuk serve`` server.
        server_timeout: Seconds one request may take in all (a batch waits in the server's queue too).
        server_token_file: File holding the server's bearer token (else ``EDGELEUK_TOKEN``).
        server_ca: PEM file of the certificate authority (or the self-signed certificate) that
            signed an ``https://`` server's certificate; else the system's authorities.
    """

    server: str | None = option(None, "remote: URL of an `edgeleuk serve` server (https://host:8000).")
    server_timeout: float = option(60.0, "remote: seconds one request to the server may take in all.")
    server_token_file: str | None = option(
        None, f"remote: file with the server's bearer token (default: ${wire.TOKEN_ENV} if set).")
    server_ca: str | None = option(
        None, "remote: CA certificate (PEM) that signed the https server's certificate (default: the system's).")


def check_predictions(payload: dict[str, Any], n: int, where: str) -> tuple[list[float], list[float]]:
    """``(logits, probs)`` of an answer for ``n`` images, every field checked.

    Raises:
        RemoteFault: Not one ``ok`` record per image, or a value that is not a finite number,
            a probability outside [0, 1], one that is not ``sigmoid(logit)``, or a malformed ``qc`` or
            ``ood_score`` (:func:`~edgeleuk.runtime.wire.check_trust_fields`).
    """
    records = payload.get("predictions")
    if not isinstance(records, list) or len(records) != n:
        count = len(records) if isinstance(records, list) else type(records).__name__
        raise RemoteFault(f"{where} returned {count} answers for {n} images")
    logits, probs = [], []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or record.get("status") != "ok":
            raise RemoteFault(f"{where}: answer {i} is not an ok prediction")
        logit = _field(record, "logit", (int, float), f"{where} answer {i}")
        prob = _field(record, "prob_all", (int, float), f"{where} answer {i}")
        if not (math.isfinite(logit) and math.isfinite(prob) and 0.0 <= prob <= 1.0):
            raise RemoteFault(f"{where}: answer {i} has logit {logit!r} and probability {prob!r} "
                              "(not finite or outside [0, 1])")
        if abs(prob - float(sigmoid(logit))) > PROB_TOL:
            raise RemoteFault(f"{where}: answer {i} has probability {prob!r}, but sigmoid({logit!r}) is "
                              f"{float(sigmoid(logit)):.6g}")
        # The trust fields are checked like the others, though the rows' qc and OOD score are made here
        # from this machine's own model file: a malformed field says the server is not what it claims.
        trust = wire.check_trust_fields(record)
        if trust:
            raise RemoteFault(f"{where}: answer {i}: {trust}")
        logits.append(float(logit))
        probs.append(float(prob))
    return logits, probs


class RemoteBackend(Backend):
    """A model served by ``edgeleuk serve``: tensors out over HTTP, logits and probabilities back.

    ``--model`` names the local copy of the served model: the server's metadata must describe
    exactly it, and the labels, threshold and class names come from it. Only when named:
    ``auto`` never moves inference to another machine.
    """

    name = "remote"
    reads = ("onnx", "openvino")
    auto_rank = None
    Options = RemoteOptions

    @classmethod
    def availability(cls) -> str | None:
        return None  # the client needs only urllib3 (a core dependency); the server is checked on open

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        own: RemoteOptions = options.of(type(self))
        if not own.server:
            raise BackendUnavailable(f"backend remote needs --server URL; {SERVE_FIX}")
        self.model_path = Path(model_path)
        fmt = self.model_format(self.model_path)
        self.raw = fmt.read_metadata(self.model_path)  # the labels come from here, never from the server
        token = wire.load_token(own.server_token_file, "--server-token-file")
        self.client = ServerClient(own.server, timeout=own.server_timeout, token=token, ca_file=own.server_ca)
        self.server_meta = server_metadata(self.client)
        check_expected(self.server_meta, self.model_path, self.raw)
        self.sha256 = str(self.server_meta["sha256"])
        self.engine = _engine(self.server_meta, self.client.url)
        served = self.server_meta.get("extras")
        # The embedding only when asked for and served (an older server or graph has none).
        self.extras = (EMBEDDING,) if EMBEDDING in options.extras and isinstance(served, list) \
            and EMBEDDING in served else ()
        local = read_model_meta(self.model_path)[0].ood
        self._dim = None if local is None else local.dim  # the local OOD model's, when there is one
        log.info("backend remote: %s serves %s (model %s, %s)", self.client.url, self.model_path.name,
                 wire.model_id(self.sha256), self.engine)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probs = [], []
        for start in range(0, len(batch), wire.MAX_IMAGES):
            lo, pr = self._run_one(batch[start : start + wire.MAX_IMAGES])
            logits += lo
            probs += pr
        return np.asarray(logits, np.float32), np.asarray(probs, np.float32)

    def run_extras(self, batch: np.ndarray, names: tuple[str, ...]) -> ExtrasResult:
        """:meth:`run` plus each cell's ``embedding`` from the server, checked (finite, one length)."""
        if not names:
            return (*self.run(batch), {})
        self._unopened(names)
        logits, probs, vectors = [], [], []
        for start in range(0, len(batch), wire.MAX_IMAGES):
            part = batch[start : start + wire.MAX_IMAGES]
            payload = self._answer(part, wire.PREDICT_EMBEDDING)
            lo, pr = check_predictions(payload, len(part), f"server {self.client.url}")
            vectors += self._embeddings(payload, len(part))
            logits += lo
            probs += pr
        return np.asarray(logits, np.float32), np.asarray(probs, np.float32), {EMBEDDING: np.stack(vectors)}

    def _embeddings(self, payload: dict[str, Any], n: int) -> list[np.ndarray]:
        where = f"server {self.client.url}"
        out = []
        for i, record in enumerate(payload["predictions"][:n]):
            try:
                out.append(wire.decode_embedding(record.get("embedding"), self._dim or (out[0].size if out else None)))
            except ValueError as exc:
                raise RemoteFault(f"{where}: answer {i}: {exc}") from None
        return out

    def _run_one(self, batch: np.ndarray) -> tuple[list[float], list[float]]:
        return check_predictions(self._answer(batch, wire.PREDICT), len(batch), f"server {self.client.url}")

    def _answer(self, batch: np.ndarray, route: str) -> dict[str, Any]:
        """The server's answer for ``batch`` on ``route``, its status and model identity checked."""
        answer = self.client.request(route, wire.encode_tensor(batch), wire.NPY_TYPE)
        where = f"server {self.client.url}"
        if answer.status != 200:
            raise RemoteFault(f"{where} answered {answer.status}: {answer.error}")
        payload = answer.payload
        if payload.get("_not_json"):
            raise RemoteFault(f"{where} answered {answer.error}, not a JSON object")
        if payload.get("sha256") != self.sha256 or payload.get("model") != wire.model_id(self.sha256):
            raise RemoteFault(
                f"{where} answered with model {str(payload.get('model'))[:20]!r}, not "
                f"{wire.model_id(self.sha256)} checked at start (redeployed?); no row from another model"
            )
        if _engine(payload, where) != self.engine:
            raise RemoteFault(f"{where} answered with engine {payload['engine']!r}, not {self.engine} checked at start")
        return payload

    def info(self) -> BackendInfo:
        """Which server and which model answer, and the engine behind them."""
        backend = self.server_meta.get("backend")
        engine = str(backend.get("engine", "?"))[:80] if isinstance(backend, dict) else "?"
        model_id = wire.model_id(self.sha256)
        return BackendInfo(
            name=self.name,
            engine=f"edgeleuk serve at {self.client.url} ({engine!r}, {self.engine})",
            providers=(f"{self.engine}@{self.client.url}", f"model {self.model_path.name} sha256:{model_id}"),
            precision=self.engine.rpartition("-")[2] or "?",
            details={"server": self.client.url, "model": self.model_path.name, "sha256": self.sha256,
                     "server_model": model_id, "server_engine": self.engine},
        )

    def metadata(self) -> dict[str, str]:
        """The LOCAL model file's metadata (the server's was checked equal to it at start)."""
        return dict(self.raw)
