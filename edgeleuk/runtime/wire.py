"""What ``edgeleuk serve`` and the ``remote`` backend say to each other over HTTP: one definition.

Routes (all answers are JSON):

* ``GET /healthz``: 200 once a replica has loaded its model (readiness and liveness);
* ``GET /metadata``: the served model: sha256, threshold, class names, precision, gates,
  the raw ``edgeleuk.*`` metadata strings and the engine that runs it;
* ``POST /predict``: either the raw bytes of one image file (``application/octet-stream`` or
  ``image/*``), decoded on the server exactly as ``predict`` decodes files, or a uint8 RGB
  tensor ``[N, S, S, 3]`` / ``[S, S, 3]`` saved with :func:`numpy.save`
  (``application/x-npy``). The answer holds one record per image (:func:`prediction_record`)
  and the identity of the model that answered.

Status codes: 400 malformed body, 413 too many images, 415 unknown content type, 422 a
well-formed request the model cannot take (wrong dtype/shape, an undecodable image), 500 an
engine fault (the server never answers with a guess), 503 not ready or overloaded.

Torch-free and Ray-free: the client side (a microscope PC) needs only numpy and the stdlib.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.io.files import sha256_file

HEALTH = "/healthz"
METADATA = "/metadata"
PREDICT = "/predict"
NPY_TYPE = "application/x-npy"
BYTES_TYPES = ("application/octet-stream", "image/")
#: Images one request may carry: bounds the memory one client can claim on the server.
MAX_IMAGES = 64
#: Largest request body accepted: MAX_IMAGES cells of 450x450x3 bytes plus room for headers.
MAX_BODY = 48 * 1024 * 1024


class WireError(ValueError):
    """A request or answer that breaks this protocol; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def model_sha256(path: str | Path) -> str:
    """The served model's identity: SHA-256 of the ``.onnx``; for an IR, of its ``.xml`` and ``.bin`` hashes."""
    path = Path(path)
    if path.suffix.lower() != ".xml":
        return sha256_file(path)
    both = sha256_file(path) + sha256_file(path.with_suffix(".bin"))
    return hashlib.sha256(both.encode("ascii")).hexdigest()


def encode_tensor(images: np.ndarray) -> bytes:
    """A uint8 batch as ``.npy`` bytes (no pickle) for a ``application/x-npy`` request."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(images), allow_pickle=False)
    return buf.getvalue()


def decode_tensor(body: bytes, size: int) -> np.ndarray:
    """Check and read an ``application/x-npy`` body as uint8 ``[N, size, size, 3]``.

    Raises:
        WireError: 400 not a readable ``.npy``; 422 wrong dtype or shape; 413 more than
            :data:`MAX_IMAGES` images.
    """
    if not body:
        raise WireError(400, "empty request body; send a uint8 [N, S, S, 3] tensor saved with numpy.save")
    try:
        images = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise WireError(400, f"body is not a readable .npy array: {exc}") from None
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise WireError(
            422, f"expected uint8 RGB images [N, {size}, {size}, 3], got {images.dtype} {list(images.shape)}"
        )
    if not 1 <= len(images) <= MAX_IMAGES:
        raise WireError(413 if len(images) else 422, f"send 1 to {MAX_IMAGES} images per request, got {len(images)}")
    return np.ascontiguousarray(images)


def body_kind(content_type: str | None) -> str:
    """``"tensor"`` or ``"file"`` for a request's content type.

    Raises:
        WireError: 415 for any other content type.
    """
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == NPY_TYPE:
        return "tensor"
    if any(kind == t or (t.endswith("/") and kind.startswith(t)) for t in BYTES_TYPES):
        return "file"
    raise WireError(
        415, f"unsupported content type {content_type!r}: send image file bytes as application/octet-stream "
        f"(or image/*) or a uint8 tensor as {NPY_TYPE}"
    )


def prediction_record(
    status: str, *, threshold: float, error: str | None = None, prob_all: float | None = None,
    logit: float | None = None, label: str | None = None, adjustments: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One image's answer: the probability, the label at the threshold used, adjustments, any error."""
    return {
        "status": status, "error": error, "prob_all": prob_all, "logit": logit, "label": label,
        "threshold": threshold, "adjustments": list(adjustments),
    }
