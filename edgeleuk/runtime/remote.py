"""``remote`` backend: the engine runs in ``edgeleuk serve`` on another machine.

A small microscope PC decodes its files as always and sends uint8 tensors to the lab's server
(:mod:`edgeleuk.runtime.wire`); ``predict``, ``watch``, ``report``, ``bench`` and the Python API
work unchanged. It follows the runtime's rules:

* explicit only (``auto`` never picks it): ``--backend remote --server URL --model FILE``, or
  ``Classifier.load(FILE, "remote", server=URL)``; an unreachable or unready server, or no
  ``--server``, is a :class:`BackendUnavailable` naming the fix (exit 2), never a silent switch
  to local inference;
* before the first image it reads the server's ``/metadata`` and refuses a server whose model
  is not the local file given as ``--model`` (SHA-256, threshold);
* every answer names the model that gave it; an answer from another model (the server was
  redeployed mid-run) fails that batch instead of mixing two models in one file.

Only numpy and the standard library: no Ray, no engine, no torch on the client.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.contract import META_KEY
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime import wire
from edgeleuk.runtime.base import Backend, BackendInfo, BackendOptions, OptionsRecord, option

log = logging.getLogger(__name__)

SERVE_FIX = "start one with `edgeleuk serve -m MODEL` (needs the ray extra) and pass its URL as --server"
#: Statuses worth one more try: Serve sheds load with 503 and proxies time out with 504.
RETRY_STATUSES = (502, 503, 504)


class RemoteFault(RuntimeError):
    """The server could not classify a batch (an engine fault there, or the wrong model answered)."""


@dataclass(frozen=True)
class Answer:
    """One decoded HTTP answer."""

    status: int
    payload: dict[str, Any]


class ServerClient:
    """A thin JSON-over-HTTP client for one ``edgeleuk serve`` URL (thread-safe: no shared state).

    Args:
        url: Base URL, e.g. ``http://gpu-box:8000``.
        timeout: Seconds per HTTP request.
        retries: Extra tries after a connection error or a 502/503/504.
    """

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 2) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--server {url!r}: give an http:// or https:// URL (e.g. http://gpu-box:8000)")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries

    def request(self, route: str, body: bytes | None = None, content_type: str | None = None) -> Answer:
        """Send one request (GET without body, POST with); retries transient failures.

        Raises:
            OSError: The server could not be reached after every try.
        """
        headers = {"Content-Type": content_type} if content_type else {}
        req = urllib.request.Request(self.url + route, data=body, headers=headers,
                                     method="POST" if body is not None else "GET")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return Answer(resp.status, json.loads(resp.read() or b"{}"))
            except urllib.error.HTTPError as exc:
                answer = Answer(exc.code, _json_or_text(exc.read()))
                if exc.code not in RETRY_STATUSES or attempt == self.retries:
                    return answer
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if attempt == self.retries:
                    raise
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def predict_tensor(self, images: np.ndarray) -> Answer:
        """POST uint8 images ``[N, S, S, 3]``."""
        return self.request(wire.PREDICT, wire.encode_tensor(images), wire.NPY_TYPE)

    def predict_file(self, data: bytes) -> Answer:
        """POST one image file's bytes; the server decodes them as ``predict`` would."""
        return self.request(wire.PREDICT, data, "application/octet-stream")


def _json_or_text(raw: bytes) -> dict[str, Any]:
    try:
        out = json.loads(raw)
        return out if isinstance(out, dict) else {"error": str(out)}
    except ValueError:
        return {"error": raw.decode("utf-8", "replace")[:500]}


def server_metadata(client: ServerClient) -> dict[str, Any]:
    """The server's ``/metadata``.

    Raises:
        BackendUnavailable: Unreachable, not ready, or not an edgeleuk server (exit 2, names the fix).
    """
    try:
        answer = client.request(wire.METADATA)
    except OSError as exc:
        raise BackendUnavailable(f"backend remote: cannot reach {client.url} ({exc}); {SERVE_FIX}") from exc
    raw = answer.payload.get("raw") if isinstance(answer.payload, dict) else None
    if answer.status != 200 or not isinstance(raw, dict) or "model" not in answer.payload:
        raise BackendUnavailable(
            f"backend remote: {client.url}{wire.METADATA} answered {answer.status} "
            f"({answer.payload.get('error', 'no edgeleuk metadata')}); is it `edgeleuk serve` and ready?"
        )
    return answer.payload


def check_expected(meta: dict[str, Any], expected: Path, raw: dict[str, str]) -> None:
    """Refuse a server whose model is not ``expected`` (the local copy named by ``--model``).

    Args:
        meta: The server's ``/metadata``.
        expected: The local model file.
        raw: ``expected``'s own ``edgeleuk.*`` strings.

    Raises:
        UsageError: Different SHA-256 or threshold; the message names both files.
    """
    served = meta["model"]
    digest = wire.model_sha256(expected)
    if served.get("sha256") != digest:
        raise UsageError(
            f"backend remote: the server runs {served.get('file')} (sha256 {str(served.get('sha256'))[:12]}...), "
            f"not {expected.name} (sha256 {digest[:12]}...); serve that model or pass the server's file as --model"
        )
    local = ModelMeta.from_json(raw[META_KEY]).threshold if META_KEY in raw else None
    if local is None or abs(float(meta["threshold"]) - local) > 1e-12:
        raise UsageError(
            f"backend remote: the server decides at threshold {meta['threshold']}, {expected.name} at {local}"
        )


@dataclass(frozen=True)
class RemoteOptions(OptionsRecord):
    """What only the ``remote`` backend can be asked.

    Attributes:
        server: Base URL of an ``edgeleuk serve`` server.
        server_timeout: Seconds one request may take (a batch waits in the server's queue too).
    """

    server: str | None = option(None, "remote: URL of an `edgeleuk serve` server (http://host:8000).")
    server_timeout: float = option(60.0, "remote: seconds one request to the server may take.")


class RemoteBackend(Backend):
    """A model served by ``edgeleuk serve``: tensors out over HTTP, logits and probabilities back.

    ``--model`` names the local copy of the served model: its SHA-256 and threshold must match
    the server's (so every row of a file comes from the model the user named). Only when named:
    ``auto`` never moves inference to another machine.
    """

    name = "remote"
    reads = ("onnx", "openvino")
    auto_rank = None
    Options = RemoteOptions

    @classmethod
    def availability(cls) -> str | None:
        return None  # the client needs only the standard library; the server is checked on open

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        own: RemoteOptions = options.of(type(self))
        if not own.server:
            raise BackendUnavailable(f"backend remote needs --server URL; {SERVE_FIX}")
        self.model_path = Path(model_path)
        fmt = self.model_format(self.model_path)
        self.client = ServerClient(own.server, timeout=own.server_timeout)
        self.server_meta = server_metadata(self.client)
        check_expected(self.server_meta, self.model_path, fmt.read_metadata(self.model_path))
        self.model = self.server_meta["model"]
        log.info("backend remote: %s serves %s (sha256 %s)", self.client.url, self.model["file"],
                 self.model["sha256"][:12])

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probs = [], []
        for start in range(0, len(batch), wire.MAX_IMAGES):
            lo, pr = self._run_one(batch[start : start + wire.MAX_IMAGES])
            logits += lo
            probs += pr
        return np.asarray(logits, np.float32), np.asarray(probs, np.float32)

    def _run_one(self, batch: np.ndarray) -> tuple[list[float], list[float]]:
        answer = self.client.predict_tensor(batch)
        if answer.status != 200:
            raise RemoteFault(f"server {self.client.url} answered {answer.status}: {answer.payload.get('error')}")
        served = answer.payload.get("model", {})
        if served.get("sha256") != self.model["sha256"]:
            raise RemoteFault(
                f"server {self.client.url} answered with model {served.get('file')} "
                f"(sha256 {str(served.get('sha256'))[:12]}...), not the one checked at start"
            )
        records = answer.payload.get("predictions", [])
        if len(records) != len(batch) or any(r.get("status") != "ok" for r in records):
            raise RemoteFault(f"server {self.client.url} returned {len(records)} answers for {len(batch)} images")
        return [float(r["logit"]) for r in records], [float(r["prob_all"]) for r in records]

    def info(self) -> BackendInfo:
        """Which server and which model answer, and the engine behind them."""
        engine = self.server_meta.get("backend", {})
        return BackendInfo(
            name=self.name,
            engine=f"edgeleuk serve at {self.client.url} ({engine.get('engine', '?')})",
            providers=(f"{engine.get('name', '?')}@{self.client.url}",
                       f"model {self.model['file']} sha256:{self.model['sha256'][:12]}"),
            precision=str(self.server_meta.get("precision") or engine.get("precision", "?")),
            details={"server": self.client.url, "model": self.model["file"], "sha256": self.model["sha256"]},
        )

    def metadata(self) -> dict[str, str]:
        return dict(self.server_meta["raw"])
