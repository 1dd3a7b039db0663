"""``edgeleuk serve --model MODEL``: the :class:`~edgeleuk.runtime.classifier.Classifier` as a Ray Serve app.

Each replica opens the model once on the backend it is given (any backend the serving machine
has) and batches requests server-side with ``@serve.batch``: concurrent requests from many
microscopes share engine calls. The routes and status codes are those of
:mod:`edgeleuk.runtime.wire`. Image bytes are decoded on the server with edgeleuk's own
decoder, so an answer equals what ``predict`` gives for the same file.

Facing a network: :mod:`edgeleuk.serving.front` authenticates every request (bearer token) and
bounds its body (length, time, bytes in flight); a replica decodes at most
:attr:`~edgeleuk.serving.front.Limits.decoders` files at once; TLS is Ray Serve's own (uvicorn's
``ssl_certfile``/``ssl_keyfile``); a non-loopback address needs a token unless ``insecure``. No
answer names a local path: ``/metadata`` gives digests of the raw metadata, not the strings.

Needs the ``ray`` extra (``pip install 'edgeleuk[cpu,ray]'``); torch-free.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from edgeleuk import __version__
from edgeleuk.cluster import RAY_FIX, connect, import_ray
from edgeleuk.cluster.placement import fit_serve
from edgeleuk.core.contract import EMBEDDING
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.io.imageio import decode_bytes
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime import wire
from edgeleuk.runtime.classifier import Classifier, Prediction
from edgeleuk.runtime.registry import AUTO, BACKENDS, explicit_only
from edgeleuk.serving.front import Front, Infer, Limits
from edgeleuk.workflow.flags import reasons

log = logging.getLogger(__name__)

APP_NAME = "edgeleuk"


@dataclass(frozen=True)
class ServeOptions:
    """How ``edgeleuk serve`` runs.

    Attributes:
        backend: Engine on the serving machine (``auto``, ``cuda``, ``openvino``, ``cpu``).
        replicas: Copies of the model, each its own process (and engine); None: as many as fit.
        threads: Engine threads per replica; also the CPUs Ray reserves for each; None: the
            smallest node's CPUs, at most 4 (:func:`edgeleuk.cluster.placement.serve_shape`).
        gpus: GPUs Ray reserves per replica (fractions share one GPU); 0: one for a GPU backend.
        max_batch: Most images one engine call takes (``@serve.batch``'s ``max_batch_size``).
        batch_wait_ms: How long a request waits for others to fill a batch.
        max_ongoing: Requests a replica accepts at once before Serve queues or sheds them; more
            than slow senders can hold until the body deadline cuts them off.
        host: Address the HTTP proxy binds (``0.0.0.0`` to accept other machines).
        port: HTTP port.
        address: Ray cluster to join (``auto``, ``ray://...``); None starts Ray on this machine.
        engine_fields: Backend option fields by name (``precision``, ``tensorrt``...), as
            :meth:`Classifier.load` takes them; every replica opens its engine with them.
        token_sha256: SHA-256 of the bearer token every request must carry
            (:func:`~edgeleuk.serving.front.token_digest`); None: no token.
        tls_cert: PEM certificate (chain) for HTTPS; with ``tls_key``.
        tls_key: PEM private key of ``tls_cert``.
        insecure: Allow a non-loopback ``host`` without a token.
        limits: Body deadline, body budget and decode slots per replica.
        heatmaps: Open every replica's model with its class activation maps, so that
            ``POST /predict?heatmap=1`` can answer with overlays (each call then computes the maps).
    """

    backend: str = "auto"
    replicas: int | None = 1
    threads: int | None = 1
    gpus: float = 0.0
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    max_ongoing: int = 256
    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None
    engine_fields: Mapping[str, Any] = field(default_factory=dict)
    token_sha256: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    limits: Limits = field(default_factory=Limits)
    heatmaps: bool = False

    def __post_init__(self) -> None:
        if min(self.replicas or 1, self.threads or 1, self.max_batch, self.max_ongoing) < 1:
            raise UsageError("replicas, threads, max batch and max ongoing requests must be >= 1")
        if self.batch_wait_ms < 0 or self.gpus < 0:
            raise UsageError("batch wait and GPUs per replica must be >= 0")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("HTTPS needs both --tls-cert and --tls-key")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{flag} {path}: no such file (give the PEM file)")
        if not (is_loopback(self.host) or self.token_sha256 or self.insecure):
            raise UsageError(
                f"--host {self.host} accepts other machines, so anyone there could classify images through "
                f"it: give --token-file FILE (or set {wire.TOKEN_ENV}) and --tls-cert/--tls-key, or "
                "--insecure on a network you trust"
            )

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def is_loopback(host: str) -> bool:
    """Whether ``host`` accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def import_serve() -> Any:
    """Ray Serve, or a usage error naming the extra to install (exit 2)."""
    import_ray()
    try:
        from ray import serve
    except ImportError as exc:
        raise BackendUnavailable(f"Ray Serve is not installed ({exc}); {RAY_FIX}") from exc
    return serve


def model_identity(model_path: Path, engine: str) -> dict[str, str]:
    """Which model and engine answer (every answer after authentication carries them).

    ``model`` is the short id (:func:`wire.model_id`), ``sha256`` the whole digest, ``file`` the
    file's name (never its folder), ``engine`` the backend and precision in use (``cpu-fp32``).
    """
    digest = wire.model_sha256(model_path)
    return {"model": wire.model_id(digest), "sha256": digest, "file": Path(model_path).name, "engine": engine}


class ModelService:
    """What one replica does, free of Ray and HTTP so it is testable on its own.

    Args:
        model_path: Exported ``.onnx``/``.xml`` on the serving machine.
        backend: Backend name for :meth:`Classifier.load`.
        threads: Engine threads.
        engine_fields: Backend option fields by name (:attr:`ServeOptions.engine_fields`).
        decoders: Image files decoded at once (each decode may take far more memory than its bytes).
        heatmaps: Open the model with its class activation maps (:attr:`ServeOptions.heatmaps`).
    """

    def __init__(self, model_path: str, backend: str, threads: int,
                 engine_fields: Mapping[str, Any] | None = None, decoders: int = 2, heatmaps: bool = False) -> None:
        maps = {"heatmaps": True} if heatmaps else {}
        self.clf = Classifier.load(model_path, backend, threads=threads, batch_size=wire.MAX_IMAGES,
                                   **maps, **dict(engine_fields or {}))
        self.heatmaps = heatmaps
        info = self.clf.info
        self.model = model_identity(Path(model_path), wire.engine_label(info.name, info.precision))
        self.size = self.clf.input_size
        self._decoding = asyncio.Semaphore(decoders)

    def metadata(self) -> dict[str, Any]:
        """The ``/metadata`` answer: everything a client checks before trusting the answers.

        No local path: the raw ``edgeleuk.*`` strings (calibration data and gate folders live
        there) are given as SHA-256 digests, which a client compares with its own copy's.
        """
        info = self.clf.info
        export = self.clf.export_info
        gate = export.get("gate")
        return {
            **self.model,
            "edgeleuk_version": __version__,
            "threshold": self.clf.threshold,
            "class_names": {str(k): v for k, v in self.clf.meta.class_names.items()},
            "precision": export.get("precision"),
            "gate_passed": gate.get("passed") if isinstance(gate, dict) else None,
            "input_size": self.size,
            "max_images": wire.MAX_IMAGES,
            "meta_sha256": wire.metadata_digests(self.clf.backend.metadata()),
            "backend": {"name": info.name, "engine": info.engine, "providers": list(info.providers),
                        "precision": info.precision},
            # What POST /predict/embedding can add (a remote client scores it with its own OOD model).
            "extras": [name for name in getattr(self.clf.backend, "extras", ()) if name == EMBEDDING],
        }

    def infer(self, images: list[np.ndarray]) -> list[Prediction]:
        """One prediction per image (logit, probability, qc, OOD score, map), one engine call.

        Raises on any engine fault; a non-finite output is a fault of the engine, not an answer.
        """
        predictions = self.clf.predict_arrays(np.stack(images))
        bad = [p.error for p in predictions if not p.ok]
        if bad:
            raise RuntimeError(bad[0])
        return predictions

    def infer_embedding(self, images: np.ndarray) -> list[dict[str, Any]]:
        """The records of :meth:`infer`, each with the cell's ``embedding`` (base64 float32); one engine call.

        Raises:
            UsageError: The served graph has no embedding (answered 422).
        """
        predictions, embeddings = self.clf.embed_arrays(images)
        return [{**self.record(p), "embedding": wire.encode_embedding(e)}
                for p, e in zip(predictions, embeddings, strict=True)]

    def record(self, prediction: Prediction, adjustments: tuple[str, ...] = (),
               image: np.ndarray | None = None) -> dict[str, Any]:
        """One image's answer at the model's threshold; with ``image``, its heatmap overlay too."""
        prob = float(prediction.prob_all)  # type: ignore[arg-type]  # an ok prediction has one
        return wire.prediction_record(
            "ok", threshold=self.clf.threshold, prob_all=prob, logit=prediction.logit,
            label=self.clf.meta.label_name(prob >= self.clf.threshold), adjustments=adjustments,
            qc=reasons(prediction), ood_score=prediction.ood_score,
            heatmap=None if image is None else self.overlay(image, prediction),
        )

    def overlay(self, image: np.ndarray, prediction: Prediction) -> str:
        """The cell and its class activation map side by side, as base64 PNG.

        Raises:
            RuntimeError: The engine gave no map (an engine fault: the server was asked for maps).
        """
        from edgeleuk.workflow.heatmaps import overlay_png  # only for heatmaps: OpenCV drawing

        if prediction.cam is None:
            raise RuntimeError("the engine returned no class activation map")
        return base64.b64encode(overlay_png(image, prediction.cam, self.clf.meta.preprocess)).decode("ascii")

    def decode(self, body: bytes) -> tuple[np.ndarray, tuple[str, ...]]:
        """Decode one image file's bytes as ``predict`` does.

        Raises:
            WireError: 400 for an empty body, 422 for bytes that are no usable image.
        """
        if not body:
            raise wire.WireError(400, "empty request body (empty file (0 bytes)); send the image file's bytes")
        decoded = decode_bytes(body, self.size)  # the caller holds a decode slot
        if not decoded.ok:
            raise wire.WireError(422, f"cannot use this image: {decoded.error}")
        return decoded.image, decoded.adjustments


    async def _predict(self, content_type: str | None, body: bytes, infer: Infer, maps: bool) -> list[dict[str, Any]]:
        if wire.body_kind(content_type) == "tensor":
            images = wire.decode_tensor(body, self.size)  # a view of the body: no decode slot needed
            outs = await asyncio.gather(*(infer(img) for img in images))
            return [self.record(p, image=img if maps else None) for p, img in zip(outs, images, strict=True)]
        async with self._decoding:
            image, adjustments = await asyncio.to_thread(self.decode, body)
        return [self.record(await infer(image), adjustments, image if maps else None)]

    def wants_heatmap(self, query: str) -> bool:
        """Whether a request's query asks for heatmaps (``?heatmap=1``).

        Raises:
            WireError: 400 when it asks and this server was started without ``--heatmaps``, or
                for a value other than 0/1/true/false.
        """
        values = parse_qs(query).get(wire.HEATMAP_QUERY, [])
        if not values:
            return False
        if values[-1].lower() not in ("1", "true", "0", "false"):
            raise wire.WireError(400, f"?{wire.HEATMAP_QUERY}= takes 1 or 0, got {values[-1][:20]!r}")
        wanted = values[-1].lower() in ("1", "true")
        if wanted and not self.heatmaps:
            raise wire.WireError(400, f"this server computes no heatmaps: start it with `edgeleuk serve --heatmaps` "
                                      f"to answer ?{wire.HEATMAP_QUERY}=1")
        return wanted

    async def _embed(self, content_type: str | None, body: bytes) -> list[dict[str, Any]]:
        if wire.body_kind(content_type) != "tensor":
            raise wire.WireError(415, f"{wire.PREDICT_EMBEDDING} takes uint8 tensors ({wire.NPY_TYPE}) only")
        if not any(name == EMBEDDING for name in getattr(self.clf.backend, "extras", ())):
            raise wire.WireError(422, "the served model has no embedding output (exported before it)")
        images = wire.decode_tensor(body, self.size)
        # One engine call for the request's cells (up to wire.MAX_IMAGES), off the event loop.
        return await asyncio.to_thread(self.infer_embedding, np.ascontiguousarray(images))

    async def respond(
        self, method: str, path: str, content_type: str | None, body: bytes, infer: Infer
    ) -> tuple[int, dict[str, Any]]:
        """Route one HTTP request: ``(status, JSON payload)``.

        Args:
            method: HTTP method.
            path: URL path (the app is served at ``/``), with its query string, if any.
            content_type: The request's ``Content-Type``.
            body: The request body.
            infer: Awaitable ``image -> Prediction``; the deployment passes its batched one.
        """
        path, _, query = path.partition("?")
        path = path.rstrip("/") or "/"
        try:
            if path == wire.HEALTH and method == "GET":
                return 200, {"status": "ready", **self.model}
            if path == wire.METADATA and method == "GET":
                return 200, self.metadata()
            if path == wire.PREDICT and method == "POST":
                maps = self.wants_heatmap(query)
                return 200, {**self.model, "predictions": await self._predict(content_type, body, infer, maps)}
            if path == wire.PREDICT_EMBEDDING and method == "POST":
                return 200, {**self.model, "predictions": await self._embed(content_type, body)}
            routes = f"GET {wire.HEALTH}, GET {wire.METADATA}, POST {wire.PREDICT}, POST {wire.PREDICT_EMBEDDING}"
            return 404, {"error": f"no route {method} {path[:100]!r}; routes: {routes}"}
        except wire.WireError as exc:
            return exc.status, {"error": str(exc), **self.model}
        except Exception as exc:  # an engine fault: 500, never a guessed answer
            log.exception("inference failed")
            # The kind only: an engine's message may name files of this machine; the log has it all.
            return 500, {"error": f"engine fault ({type(exc).__name__}); the server's log has the details",
                         **self.model}


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(payload, status_code=status, headers=headers)


def build_app(model_path: Path, options: ServeOptions) -> Any:
    """The Ray Serve application (bound deployment) for ``model_path``; nothing starts yet."""
    serve = import_serve()
    from starlette.requests import Request

    @serve.deployment(
        name="Classifier",
        num_replicas=options.replicas,
        max_ongoing_requests=options.max_ongoing,
        ray_actor_options={"num_cpus": options.threads, "num_gpus": options.gpus},
    )
    class ClassifierDeployment:
        """One replica: a loaded model behind the routes of :mod:`edgeleuk.runtime.wire`."""

        def __init__(self, path: str, backend: str, threads: int, max_batch: int, wait_s: float,
                     engine_fields: dict[str, Any], token_sha256: str | None, limits: Limits,
                     heatmaps: bool = False) -> None:
            self.service = ModelService(path, backend, threads, engine_fields, decoders=limits.decoders,
                                        heatmaps=heatmaps)
            self.front = Front(self.service, token_sha256, limits)
            self._infer.set_max_batch_size(max_batch)
            self._infer.set_batch_wait_timeout_s(wait_s)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
        async def _infer(self, images: list[np.ndarray]) -> list[Prediction]:
            # The engine releases the GIL: run it off the event loop so health checks still answer.
            return await asyncio.to_thread(self.service.infer, images)

        async def __call__(self, request: Request) -> Any:
            return _json(*await self.front.handle(request, self._infer))

    return ClassifierDeployment.bind(
        str(Path(model_path).resolve()), options.backend, options.threads, options.max_batch,
        options.batch_wait_ms / 1000.0, dict(options.engine_fields), options.token_sha256, options.limits,
        options.heatmaps,
    )


def _check_backend(name: str) -> None:
    """Refuse here, with the fix, a backend no replica could open (rather than replicas that keep dying)."""
    if name == AUTO:
        return
    if name not in BACKENDS or name in explicit_only():
        local = ", ".join(n for n in BACKENDS if n not in explicit_only())
        raise UsageError(f"serve runs the model on an engine of this machine: choose {AUTO} or one of {local}")
    reason = BACKENDS[name].availability()
    if reason:
        raise BackendUnavailable(f"backend {name} is not available: {reason}")


def _check_model(model_path: Path, options: ServeOptions) -> None:
    """Open the model here once, as every replica will: metadata, graph contract, engine options.

    A model that breaks the contract is then one usage error (exit 2) before Ray starts, not a
    replica that dies again and again behind a page of Ray traceback.
    """
    maps = {"heatmaps": True} if options.heatmaps else {}
    clf = Classifier.load(model_path, options.backend, threads=1, **maps, **dict(options.engine_fields))
    del clf


def http_options(options: ServeOptions) -> dict[str, Any]:
    """Ray Serve's HTTP options: address, port and, with a certificate, uvicorn's TLS files."""
    out: dict[str, Any] = {"host": options.host, "port": options.port}
    if options.tls_cert:
        out["ssl_certfile"] = str(Path(options.tls_cert).resolve())
        out["ssl_keyfile"] = str(Path(str(options.tls_key)).resolve())
    return out


def start(model_path: Path, options: ServeOptions | None = None) -> str:
    """Start (or join) Ray, deploy the model and return the base URL once replicas are ready.

    Raises:
        UsageError: Missing or unsupported model file, or one whose graph breaks the contract
            (checked before Ray starts).
        BackendUnavailable: Ray is not installed.
    """
    options = options or ServeOptions()
    read_model_meta(Path(model_path))  # a missing/foreign model is a usage error, not a dead replica
    _check_backend(options.backend)
    serve = import_serve()
    _check_model(Path(model_path), options)
    options = fit_serve(connect(options.address), options)  # exit 2 now, not replicas waiting for a node
    serve.start(http_options=http_options(options))
    serve.run(build_app(Path(model_path), options), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    return f"{options.scheme}://{host}:{options.port}"


def stop() -> None:
    """Remove the edgeleuk app and Serve from the Ray cluster this process is connected to."""
    import_serve().shutdown()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def serve_forever(model_path: Path, options: ServeOptions, echo: Callable[[str], None] = print) -> None:
    """``edgeleuk serve``: start, say where and what, serve until Ctrl-C or SIGTERM, then shut Serve down.

    SIGTERM (systemd, docker stop) stops as cleanly as Ctrl-C; so does SIGINT in a process that
    was started with it ignored (a background job of a script).
    """
    url = start(model_path, options)
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(sig, _interrupt)
    echo(f"serving {Path(model_path).name} at {url} (replicas as planned above, batches up to {options.max_batch})")
    echo(f"  GET {url}{wire.HEALTH}   GET {url}{wire.METADATA}   POST {url}{wire.PREDICT}")
    extra = (" --server-token-file TOKEN_FILE" if options.token_sha256 else "") + (
        " --server-ca CA_FILE" if options.tls_cert else "")
    echo(f"  clients: edgeleuk predict DIR --model {Path(model_path).name} --backend remote --server {url}{extra}")
    if not options.token_sha256:
        echo("  no token: anyone who can reach this address can use it")
    elif not options.tls_cert and not is_loopback(options.host):
        echo("  note: without --tls-cert/--tls-key the token and the images cross the network in clear")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        echo("stopping")
    finally:
        stop()
