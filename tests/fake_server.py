"""A fake ``edgeleuk serve`` on loopback for the ``remote`` client's tests: honest by default, hostile on request.

Also the real server's routes (:func:`serving_service`) and any handler (:func:`loopback`) on loopback.

It answers ``/metadata`` from a local model file exactly as the real server would and
``/predict`` with the brightness model's answers (:func:`runtime_support.expected_logit`), so a
test changes one thing (a field, the status, the body, the pace) and sees what the client does.
Every server runs in a daemon thread, serves loopback only and is shut down by its context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from runtime_support import expected_logit

from edgeleuk.core.numerics import sigmoid
from edgeleuk.io.formats import format_of
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime import wire


def honest_metadata(model: Path) -> dict[str, Any]:
    """What ``edgeleuk serve`` answers on ``/metadata`` for ``model`` on the cpu backend."""
    meta, export = read_model_meta(model)
    digest = wire.model_sha256(model)
    return {
        "model": wire.model_id(digest), "sha256": digest, "file": model.name, "engine": "cpu-fp32",
        "edgeleuk_version": "test", "threshold": meta.threshold,
        "class_names": {str(k): v for k, v in meta.class_names.items()}, "precision": export.get("precision"),
        "gate_passed": None, "input_size": meta.preprocess.input_size, "max_images": wire.MAX_IMAGES,
        "meta_sha256": wire.metadata_digests(format_of(model).read_metadata(model)),
        "backend": {"name": "cpu", "engine": "fake", "providers": ["CPUExecutionProvider"], "precision": "fp32"},
    }


def honest_predictions(body: bytes, threshold: float = 0.5) -> list[dict[str, Any]]:
    """The brightness model's records for an ``.npy`` request body."""
    images = np.load(io.BytesIO(body), allow_pickle=False)
    logits = expected_logit(images)
    probs = sigmoid(logits)
    return [wire.prediction_record("ok", threshold=threshold, prob_all=float(p), logit=float(lo),
                                   label="all" if p >= threshold else "hem")
            for lo, p in zip(logits, probs, strict=True)]


@dataclass
class Fake:
    """How the fake behaves; tests change fields, even while it serves.

    Attributes:
        metadata: The ``/metadata`` answer.
        answer: Called with ``(request number, honest /predict answer)``; returns the answer to send.
        token: Bearer token required (None: none).
        raw_metadata: Bytes sent for ``/metadata`` instead of JSON (non-JSON answers).
        redirect: ``Location`` to answer every request with (302).
        seen: ``(method, path, Authorization)`` of every request received.
    """

    metadata: dict[str, Any]
    answer: Callable[[int, dict[str, Any]], dict[str, Any]] = lambda i, honest: honest
    token: str | None = None
    raw_metadata: bytes | None = None
    redirect: str | None = None
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON bodies."""

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def _handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _route(self) -> None:
            auth = self.headers.get("Authorization")
            fake.seen.append((self.command, self.path, auth))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if fake.redirect:
                return self._send(302, b"{}", {"Location": fake.redirect})
            if fake.token and auth != f"Bearer {fake.token}":
                return self._send(401, json.dumps({"error": "authentication required"}).encode())
            if self.path == wire.METADATA:
                return self._send(200, fake.raw_metadata or json.dumps(fake.metadata).encode())
            ident = {k: fake.metadata[k] for k in ("model", "sha256", "file", "engine")}
            honest = {**ident, "predictions": honest_predictions(body, fake.metadata["threshold"])}
            n = sum(1 for s in fake.seen if s[1] == wire.PREDICT)
            self._send(200, json.dumps(fake.answer(n, honest)).encode())

        do_GET = do_POST = _route

    return Handler


@contextlib.contextmanager
def serving(fake: Fake, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Serve ``fake`` on a free loopback port; yields its base URL; shuts it down on exit."""
    with loopback(_handler(fake), tls) as url:
        yield url


@contextlib.contextmanager
def serving_service(service: Any, tamper: Callable[[str, Any], Any] | None = None) -> Iterator[str]:
    """A real ``ModelService`` (``edgeleuk serve``'s routes, without Ray) on a free loopback port.

    Args:
        service: An :class:`edgeleuk.serving.server.ModelService`.
        tamper: Called as ``tamper(path, payload)`` on every 200 answer; returns the payload to send.
    """

    async def infer(image: Any) -> Any:
        return (await asyncio.to_thread(service.infer, [image]))[0]

    class Handler(JsonHandler):
        def _route(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = asyncio.run(service.respond(self.command, self.path,
                                                          self.headers.get("Content-Type"), body, infer))
            if tamper is not None and status == 200:
                payload = tamper(self.path, payload)
            self._send(status, json.dumps(payload).encode())

        do_GET = do_POST = _route

    with loopback(Handler) as url:
        yield url


@contextlib.contextmanager
def loopback(handler: type[BaseHTTPRequestHandler], tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port (HTTPS with ``tls``); yields the base URL; shuts down on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    scheme = "http"
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def raw_server(reply: Callable[[socket.socket], None]) -> Iterator[tuple[str, list[int]]]:
    """A one-connection-at-a-time raw socket server: ``reply(conn)`` writes whatever it likes.

    Yields the base URL and a list to which each connection's count of bytes sent is appended.
    At most 20 connections are answered; the thread stops when the context exits.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()
    sent: list[int] = []

    def loop() -> None:
        for _ in range(20):
            conn = None
            while conn is None and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    conn, _ = listener.accept()
            if conn is None:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)  # the request (small: GET /metadata or a tiny POST)
                counter = _Counting(conn, stop)
                with contextlib.suppress(OSError):
                    reply(counter)
                sent.append(counter.count)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", sent
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


class _Counting:
    """A socket wrapper that counts the bytes a raw reply managed to send, and stops with the test."""

    def __init__(self, conn: socket.socket, stop: threading.Event) -> None:
        self.conn, self.stop, self.count = conn, stop, 0

    def send(self, data: bytes) -> None:
        if self.stop.is_set():
            raise OSError("test over")
        self.conn.sendall(data)
        self.count += len(data)

    def drip(self, data: bytes, every_s: float) -> None:
        """Send ``data`` one byte at a time, ``every_s`` apart, until the client hangs up."""
        for byte in data:
            self.send(bytes([byte]))
            time.sleep(every_s)
