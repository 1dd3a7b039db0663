"""What a replica of ``edgeleuk serve`` does with an HTTP request before the model sees it.

In this order, so that a caller without the token costs nothing and a slow or huge body holds
nothing for long:

1. **who:** with a token, every route wants ``Authorization: Bearer TOKEN``; anything else is
   401 before routing, so no answer says whether a route or a model exists. The replica keeps
   only the token's SHA-256 and compares digests with :func:`hmac.compare_digest` (constant time);
2. **how much:** a body needs a ``Content-Length`` (411 without: a chunked body has no size to
   check up front) of at most :data:`~edgeleuk.runtime.wire.MAX_BODY` (413), and the bytes
   buffered by all requests of a replica stay within :attr:`Limits.body_budget` (503 when full);
3. **how fast:** the body must arrive within :attr:`Limits.body_timeout_s` (408); the read counts
   bytes and stops at the declared length.

Then :meth:`ModelService.respond <edgeleuk.serving.server.ModelService.respond>` routes it; the
service caps concurrent decodes itself. Free of Ray: tests serve it with uvicorn on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.runtime import wire
from edgeleuk.runtime.classifier import Prediction

#: One image in, its :class:`~edgeleuk.runtime.classifier.Prediction` out, awaited: the deployment's
#: ``@serve.batch`` method.
Infer = Callable[[np.ndarray], Awaitable[Prediction]]


class Service(Protocol):
    """What the front hands a request to (:class:`edgeleuk.serving.server.ModelService`)."""

    async def respond(self, method: str, path: str, content_type: str | None, body: bytes,
                      infer: Infer) -> tuple[int, dict[str, Any]]: ...

#: Methods whose requests carry a body.
_BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class Limits:
    """How much one replica lets requests claim.

    Attributes:
        body_timeout_s: Seconds a request's body may take to arrive (slow senders get 408).
        body_budget: Bytes of request bodies one replica holds at once (503 beyond, retried
            by clients); with :data:`~edgeleuk.runtime.wire.MAX_BODY` it bounds body memory.
        decoders: Image files one replica decodes at once (a decode can take far more memory
            than its compressed bytes); further requests wait for a slot.
    """

    body_timeout_s: float = 15.0
    body_budget: int = 4 * wire.MAX_BODY
    decoders: int = 2

    def __post_init__(self) -> None:
        if self.body_timeout_s <= 0 or self.decoders < 1 or self.body_budget < wire.MAX_BODY:
            raise UsageError(f"body timeout must be > 0, decoders >= 1 and the body budget >= {wire.MAX_BODY}")


def token_digest(token: str | None) -> str | None:
    """What a replica keeps of the token: its SHA-256 (the token itself never reaches Ray)."""
    return None if token is None else hashlib.sha256(token.encode("utf-8")).hexdigest()


class RequestRefused(Exception):
    """A request answered before the model saw it: status, JSON payload and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def check_token(authorization: str | None, digest: str | None) -> None:
    """Refuse (401) a request without the bearer token whose SHA-256 is ``digest``; None: no token set.

    Raises:
        RequestRefused: 401, the same answer for a missing, malformed or wrong token.
    """
    if digest is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    given = hashlib.sha256(presented.strip().encode("utf-8", "replace")).hexdigest()
    # Compare digests of equal length in constant time, whatever was presented.
    if not (hmac.compare_digest(given, digest) and scheme.lower() == "bearer"):
        raise RequestRefused(
            401, "authentication required: send 'Authorization: Bearer TOKEN' with the token the server was "
            "started with (--server-token-file for the remote backend)",
            {"WWW-Authenticate": 'Bearer realm="edgeleuk"'},
        )


def declared_length(method: str, headers: Any) -> int:
    """The body length a request declares (0 for a request without body).

    Raises:
        RequestRefused: 411 no ``Content-Length`` on a body (chunked), 413 over the limit or malformed.
    """
    length = headers.get("content-length")
    if length is None:
        if method in _BODY_METHODS or headers.get("transfer-encoding"):
            raise RequestRefused(411, "a request body needs a Content-Length header (chunked bodies are refused); "
                                      f"send at most {wire.MAX_BODY} bytes")
        return 0
    if not length.isdigit() or int(length) > wire.MAX_BODY:
        raise RequestRefused(413, f"request body over {wire.MAX_BODY} bytes (or a bad length); "
                                  f"send at most {wire.MAX_IMAGES} images per request")
    return int(length)


class Front:
    """Authentication and bounded body reads in front of one replica's :class:`ModelService`.

    Args:
        service: The replica's model service.
        token_sha256: SHA-256 hex of the bearer token (:func:`token_digest`); None: no token.
        limits: Body timeout and budget.
    """

    def __init__(self, service: Service, token_sha256: str | None, limits: Limits) -> None:
        self.service = service
        self.token_sha256 = token_sha256
        self.limits = limits
        self.buffered = 0  # bytes of bodies held now; one event loop, so no lock

    async def _body(self, request: Any, length: int) -> bytes:
        """Read the body within the deadline, counting bytes; the budget is held by the caller."""
        parts, got = [], 0
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                async for chunk in request.stream():
                    got += len(chunk)
                    if got > length:
                        raise RequestRefused(413, f"request body longer than its Content-Length ({length})")
                    parts.append(chunk)
        except TimeoutError:
            raise RequestRefused(408, f"request body not received within {self.limits.body_timeout_s:g} s "
                                      f"({got} of {length} bytes); send it at once") from None
        return b"".join(parts)

    async def handle(self, request: Any, infer: Infer) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one starlette request: ``(status, JSON payload, extra headers)``."""
        length = 0
        try:
            check_token(request.headers.get("authorization"), self.token_sha256)
            length = declared_length(request.method, request.headers)
            if self.buffered + length > self.limits.body_budget:
                length = 0
                raise RequestRefused(503, "server busy: too many request bodies in flight; retry shortly",
                                     {"Retry-After": "1"})
            self.buffered += length
            body = await self._body(request, length) if length else b""
            query = request.url.query  # ?heatmap=1 travels with the path
            status, payload = await self.service.respond(
                request.method, request.url.path + (f"?{query}" if query else ""), request.headers.get("content-type"),
                body, infer,
            )
            return status, payload, {}
        except RequestRefused as exc:
            return exc.status, {"error": str(exc)}, exc.headers
        finally:
            self.buffered -= length
