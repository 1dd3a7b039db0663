"""The ``remote`` backend's HTTP client: urllib3 with a token, verified TLS, capped answers, one deadline.

What a hostile or broken server cannot do to the client through it:

* hold a request longer than ``timeout`` seconds in all: a watchdog shuts the request's socket
  down when the deadline passes, whether the server is silent or drips a byte at a time
  (urllib3's own timeouts bound each socket read, not the request);
* make it read more than :data:`~edgeleuk.runtime.wire.MAX_ANSWER` bytes (no decompression
  either: the bytes read are the bytes parsed);
* send it elsewhere: redirects are answers (a 3xx), never followed;
* crash it with a non-JSON or deeply nested answer: that is a :class:`RemoteFault`.

Connections are kept alive and reused (one small pool per server), so thread-safe.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from edgeleuk import __version__
from edgeleuk.core.errors import UsageError
from edgeleuk.runtime import wire

#: Statuses worth one more try: Serve sheds load with 503 and proxies time out with 502/504.
RETRY_STATUSES = (502, 503, 504)


class RemoteFault(RuntimeError):
    """The server could not classify a batch, or answered outside the protocol (an engine fault)."""


@dataclass(frozen=True)
class Answer:
    """One decoded HTTP answer: its status and JSON object (``{"error": text}`` when not JSON)."""

    status: int
    payload: dict[str, Any]

    @property
    def error(self) -> str:
        """The answer's error message, shortened and printable."""
        return repr(str(self.payload.get("error", "no error message"))[:300])


class _Watchdog:
    """Shuts down the socket of one request when its deadline passes (any thread may fire it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self.fired = False

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            if self.fired:
                self._kill()

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            self._kill()

    def _kill(self) -> None:
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read or write at once
            except OSError:
                pass


_current = threading.local()  # the watchdog of the request this thread is making


class _Watched:
    """Mixin for urllib3 connections: hand the connection to the current request's watchdog."""

    def _watch(self) -> None:
        dog = getattr(_current, "dog", None)
        if dog is not None:
            dog.attach(self)

    def connect(self) -> None:
        self._watch()
        super().connect()  # type: ignore[misc]
        self._watch()  # now with a socket to shut down

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watch()
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConn(_Watched, HTTPConnection):
    pass


class _HTTPSConn(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _HTTPConn


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConn


def _json_object(raw: bytes) -> dict[str, Any]:
    """An answer's JSON object; text, other JSON values and nesting bombs become ``{"error": ...}``."""
    try:
        out = json.loads(raw)
    except (ValueError, RecursionError):
        return {"error": raw.decode("utf-8", "replace")[:500], "_not_json": True}
    return out if isinstance(out, dict) else {"error": f"a JSON {type(out).__name__}", "_not_json": True}


class ServerClient:
    """A JSON-over-HTTP client for one ``edgeleuk serve`` URL (thread-safe; connections reused).

    Args:
        url: Base URL, e.g. ``https://gpu-box:8000``.
        timeout: Seconds one try of a request may take in all (connect, send, wait, read).
        retries: Extra tries after a connection error or a 502/503/504.
        token: Bearer token sent with every request; None sends none.
        ca_file: PEM file of the authority that signed an ``https://`` server's certificate;
            None trusts the system's. Certificates and host names are always verified.
        max_answer: Most bytes of an answer read before it is a :class:`RemoteFault`.
    """

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 2, token: str | None = None,
                 ca_file: str | None = None, max_answer: int = wire.MAX_ANSWER) -> None:
        parsed = urllib3.util.parse_url(url)
        if parsed.scheme not in ("http", "https") or not parsed.host or parsed.query or parsed.auth:
            raise UsageError(f"--server {url!r}: give an http:// or https:// URL (e.g. https://gpu-box:8000)")
        if timeout <= 0:
            raise UsageError(f"--server-timeout must be > 0, got {timeout}")
        if ca_file is not None and parsed.scheme != "https":
            raise UsageError(f"--server-ca is for https:// servers; {url} is plain http")
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.max_answer = timeout, retries, max_answer
        self._base = (parsed.path or "").rstrip("/")
        self._headers = {"User-Agent": f"edgeleuk/{__version__}", "Accept-Encoding": "identity"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        kw: dict[str, Any] = {"maxsize": 8, "block": False}
        if parsed.scheme == "https":
            self._pool: HTTPConnectionPool = _TLSPool(parsed.host, parsed.port or 443, cert_reqs="CERT_REQUIRED",
                                                      ca_certs=ca_file, **kw)
        else:
            self._pool = _Pool(parsed.host, parsed.port or 80, **kw)

    def _read(self, resp: Any) -> bytes:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_answer:
            raise RemoteFault(f"{self.url} sent an answer of {declared} bytes (at most {self.max_answer} read)")
        parts, got = [], 0
        while chunk := resp.read(65536):
            got += len(chunk)
            if got > self.max_answer:
                raise RemoteFault(f"{self.url} sent an answer over {self.max_answer} bytes; stopped reading")
            parts.append(chunk)
        return b"".join(parts)

    def _once(self, method: str, route: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        """One try under one deadline. Raises TimeoutError past it, OSError on a transport failure."""
        dog = _Watchdog()
        _current.dog = dog
        timer = threading.Timer(self.timeout, dog.fire)
        timer.daemon = True
        timer.start()
        resp, done = None, False
        try:
            resp = self._pool.urlopen(
                method, self._base + route, body=body, headers=headers, retries=False, redirect=False,
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout), preload_content=False,
                decode_content=False, assert_same_host=False,
            )
            data = self._read(resp)
            if dog.fired:  # the socket was shut down mid-answer: what was read is not the answer
                raise TimeoutError
            done = True
            return Answer(resp.status, _json_object(data))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if dog.fired or isinstance(exc, (TimeoutError, urllib3.exceptions.ReadTimeoutError)):
                raise TimeoutError(f"{self.url}{route} took longer than {self.timeout:g} s") from None
            raise ConnectionError(f"{self.url}{route}: {type(exc).__name__}: {str(exc)[:200]}") from None
        finally:
            timer.cancel()
            _current.dog = None
            if resp is not None:
                if not done or dog.fired:
                    resp.close()  # a half-read answer, or a socket shut down: this connection is not reused
                resp.release_conn()

    def request(self, route: str, body: bytes | None = None, content_type: str | None = None) -> Answer:
        """Send one request (GET without body, POST with); retries transient failures.

        Raises:
            TimeoutError: A try took longer than ``timeout`` (not retried: the server is there but slow).
            OSError: The server could not be reached after every try.
            RemoteFault: An answer over ``max_answer`` bytes.
        """
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        method = "GET" if body is None else "POST"
        for attempt in range(self.retries + 1):
            try:
                answer = self._once(method, route, body, headers)
                if answer.status not in RETRY_STATUSES or attempt == self.retries:
                    return answer
            except TimeoutError:
                raise
            except OSError:
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
