"""What ``edgeleuk serve`` and the ``remote`` backend say to each other over HTTP: one definition.

Routes (all answers are JSON):

* ``GET /healthz``: 200 once a replica has loaded its model (readiness and liveness);
* ``GET /metadata``: the served model: sha256, threshold, class names, precision, whether its
  gate passed, the SHA-256 of each raw ``edgeleuk.*`` metadata string (the strings may name
  local paths, the digests do not) and the engine that runs it;
* ``POST /predict``: either the raw bytes of one image file (``application/octet-stream`` or
  ``image/*``), decoded on the server exactly as ``predict`` decodes files, or a uint8 RGB
  tensor ``[N, S, S, 3]`` / ``[S, S, 3]`` saved with :func:`numpy.save`
  (``application/x-npy``). The answer holds one record per image (:func:`prediction_record`)
  and the identity of the model that answered. Each record also says whether the cell can be
  trusted (``qc``: the reasons it was flagged, empty when it passed; ``ood_score``: its distance
  from the calibration cells, or null); ``POST /predict?heatmap=1`` to a server started with
  ``--heatmaps`` adds ``heatmap``, the cell and its class activation map side by side as a
  base64 PNG (:data:`HEATMAP_QUERY`).
* ``POST /predict/embedding``: the same, for tensors only, each record also carrying the graph's
  ``embedding`` (float32, little-endian, base64; :func:`encode_embedding`). The ``remote`` client
  scores it with its OWN model file's OOD model: the server never says what is out of distribution.
  ``/metadata`` lists ``extras`` (``["embedding"]`` when the served graph has one).

Every answer after authentication names the model (``model``: the first 12 hex digits of
:func:`model_sha256`, ``sha256``: all of it) and the engine (``engine``: backend and precision in
use, e.g. ``cpu-fp32``). A server started with a token wants ``Authorization: Bearer TOKEN`` on
every route; without it every route answers 401 alike (no answer says whether a model exists).

Status codes: 400 malformed body, 401 no or a wrong token, 408 the body came too slowly, 411 a
body without Content-Length, 413 too large, 415 unknown content type, 422 a well-formed request
the model cannot take (wrong dtype/shape, an undecodable image), 500 an engine fault (the
server never answers with a guess), 503 not ready or overloaded.

Torch-free and Ray-free: the client side (a microscope PC) needs only numpy and urllib3.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.io.formats import model_sha256 as model_sha256  # the model's identity, declared by its format

HEALTH = "/healthz"
METADATA = "/metadata"
PREDICT = "/predict"
PREDICT_EMBEDDING = "/predict/embedding"
NPY_TYPE = "application/x-npy"
BYTES_TYPES = ("application/octet-stream", "image/")
#: Images one request may carry: bounds the memory one client can claim on the server.
MAX_IMAGES = 64
#: Largest request body accepted: MAX_IMAGES cells of 450x450x3 bytes plus room for headers.
MAX_BODY = 48 * 1024 * 1024
#: Largest answer a client reads: a full batch's records are ~15 KB, metadata ~2 KB; with
#: embeddings of the paper's network (2048 floats, ~11 KB in base64 each) 64 records are ~0.7 MB.
MAX_ANSWER = 1024 * 1024
#: Longest embedding a record may carry (floats): bounds what one answer can make a client decode.
MAX_EMBEDDING = 16384
#: Hex digits of :func:`model_sha256` that name a model in answers and output rows.
MODEL_ID_HEX = 12
#: Environment variable holding the bearer token, for ``serve`` and for the ``remote`` client.
TOKEN_ENV = "EDGELEUK_TOKEN"
#: Shortest token accepted: 16 characters leave no room for guessing over a network.
MIN_TOKEN = 16
#: The query parameter that asks ``/predict`` for heatmap overlays (``?heatmap=1``).
HEATMAP_QUERY = "heatmap"
#: Longest ``qc`` reason a record may carry (the reasons are short slugs: ``blur``, ``off_centre``).
MAX_REASON = 32
#: Largest ``.npy`` header read before the shape and dtype are checked.
_NPY_HEADER_MAX = 4096


class WireError(ValueError):
    """A request or answer that breaks this protocol; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def model_id(sha256: str) -> str:
    """The short model id answers and output rows carry: the digest's first :data:`MODEL_ID_HEX` hex digits."""
    return sha256[:MODEL_ID_HEX]


# OpenVINO says f32/f16 where ONNX export records say fp32/fp16: one spelling in answers and rows.
_PRECISION_NAMES = {"f32": "fp32", "f16": "fp16"}


def engine_label(backend: str, precision: str) -> str:
    """What computed an answer, as answers and output rows name it: ``cpu-fp32``, ``openvino-bf16``."""
    precision = _PRECISION_NAMES.get(precision, precision)
    return f"{backend}-{re.sub(r'[^0-9A-Za-z.+]+', '_', precision)}"


def metadata_digests(raw: Mapping[str, str]) -> dict[str, str]:
    """SHA-256 of each raw ``edgeleuk.*`` metadata string, by key: equal digests, equal metadata."""
    return {key: hashlib.sha256(str(raw[key]).encode("utf-8")).hexdigest() for key in sorted(raw)}


def load_token(path: str | Path | None, flag: str) -> str | None:
    """The bearer token from the file ``path``, else from :data:`TOKEN_ENV`, else None.

    Args:
        path: Token file (its first line, surrounding blanks dropped); None reads the environment.
        flag: The option that named the file, for messages.

    Raises:
        UsageError: Unreadable file, or a token shorter than :data:`MIN_TOKEN` or with blanks
            or control characters (it must fit an ``Authorization`` header).
    """
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{flag} {path}: cannot read the token ({exc})") from None
        token, where = (lines[0].strip() if lines else ""), f"{flag} {path}"
    else:
        token, where = os.environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
        if not token:
            return None
    allowed = set(string.ascii_letters + string.digits + string.punctuation)
    if len(token) < MIN_TOKEN or not set(token) <= allowed:
        raise UsageError(
            f"{where}: the token must be at least {MIN_TOKEN} printable ASCII characters without blanks "
            "(make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def encode_tensor(images: np.ndarray) -> bytes:
    """A uint8 batch as ``.npy`` bytes (no pickle) for a ``application/x-npy`` request."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(images), allow_pickle=False)
    return buf.getvalue()


def _npy_header(body: bytes) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """Shape, dtype, Fortran order and data offset of a ``.npy`` body, read without touching the data."""
    buf = io.BytesIO(body[: _NPY_HEADER_MAX + 16])
    try:
        major, _ = np.lib.format.read_magic(buf)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(buf, max_header_size=_NPY_HEADER_MAX)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise WireError(400, f"body is not a readable .npy array: {exc}") from None
    return tuple(shape), dtype, fortran, buf.tell()


def decode_tensor(body: bytes, size: int) -> np.ndarray:
    """Check and read an ``application/x-npy`` body as uint8 ``[N, size, size, 3]``.

    The header's dtype and shape are checked before any array is made, and the data is a view
    of ``body``: a header declaring a huge shape costs nothing (the first answer is a 4xx).

    Raises:
        WireError: 400 not a readable ``.npy`` (or data shorter or longer than its header says);
            422 wrong dtype or shape; 413 more than :data:`MAX_IMAGES` images.
    """
    if not body:
        raise WireError(400, "empty request body; send a uint8 [N, S, S, 3] tensor saved with numpy.save")
    shape, dtype, fortran, offset = _npy_header(body)
    if len(shape) == 3:
        shape = (1, *shape)
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[1:] != (size, size, 3):
        order = " (Fortran order)" if fortran else ""
        raise WireError(422, f"expected uint8 RGB images [N, {size}, {size}, 3], got {dtype} {list(shape)}{order}")
    if not 1 <= shape[0] <= MAX_IMAGES:
        raise WireError(413 if shape[0] else 422, f"send 1 to {MAX_IMAGES} images per request, got {shape[0]}")
    count = int(np.prod(shape))
    if len(body) - offset != count:
        raise WireError(400, f"body is not a readable .npy array: {len(body) - offset} data bytes for {list(shape)}")
    return np.frombuffer(body, np.uint8, count=count, offset=offset).reshape(shape)


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
    qc: tuple[str, ...] = (), ood_score: float | None = None, heatmap: str | None = None,
) -> dict[str, Any]:
    """One image's answer: the probability, the label at the threshold used, adjustments, any error.

    ``qc`` (reasons the cell was flagged, empty when it passed) and ``ood_score`` say whether to
    trust the call; ``heatmap`` (a base64 PNG) is there only when it was asked for.
    """
    record = {
        "status": status, "error": error, "prob_all": prob_all, "logit": logit, "label": label,
        "threshold": threshold, "adjustments": list(adjustments), "qc": list(qc), "ood_score": ood_score,
    }
    return record if heatmap is None else {**record, "heatmap": heatmap}


def check_trust_fields(record: Mapping[str, Any]) -> str | None:
    """What is wrong with a record's ``qc`` and ``ood_score``, or None when they are well-formed.

    ``qc`` is a list of short lowercase slugs; ``ood_score`` is null or a finite number >= 0. An
    answer from a server of an older version, without either field, is well-formed (None).
    """
    qc = record.get("qc", [])
    if not isinstance(qc, list) or not all(
        isinstance(r, str) and 0 < len(r) <= MAX_REASON and re.fullmatch(r"[a-z][a-z0-9_]*", r) for r in qc
    ):
        return f"field 'qc' is {str(qc)[:80]!r}, expected a list of reason slugs"
    score = record.get("ood_score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not math.isfinite(score) or score < 0):
        return f"field 'ood_score' is {str(score)[:40]!r}, expected null or a finite number >= 0"
    return None


def encode_embedding(vector: np.ndarray) -> str:
    """One cell's embedding as base64 of little-endian float32: compact in JSON (~1.4 bytes per bit of float)."""
    import base64

    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").reshape(-1).tobytes()).decode("ascii")


def decode_embedding(text: object, dim: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_embedding`, checked: float32 ``[D]``, finite, ``D == dim`` when given.

    Raises:
        ValueError: Not base64 text, a length that is not whole floats or is over
            :data:`MAX_EMBEDDING`, another dimension, or non-finite values.
    """
    import base64
    import binascii

    if not isinstance(text, str) or len(text) > 4 * (MAX_EMBEDDING * 4 + 2) // 3 + 4:
        raise ValueError(f"embedding is {type(text).__name__} of {len(text) if isinstance(text, str) else '?'} "
                         "characters, expected base64 float32")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"embedding is not base64: {exc}") from None
    if not raw or len(raw) % 4:
        raise ValueError(f"embedding holds {len(raw)} bytes, not whole float32 values")
    vector = np.frombuffer(raw, "<f4").astype(np.float32)
    if dim is not None and vector.size != dim:
        raise ValueError(f"embedding has {vector.size} values, expected {dim}")
    if not np.isfinite(vector).all():
        raise ValueError("embedding holds NaN or infinite values")
    return vector
