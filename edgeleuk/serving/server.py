"""``edgeleuk serve --model MODEL``: the :class:`~edgeleuk.runtime.classifier.Classifier` as a Ray Serve app.

Each replica opens the model once on the backend it is given (any backend the serving machine
has) and batches requests server-side with ``@serve.batch``: concurrent requests from many
microscopes share engine calls. The routes and status codes are those of
:mod:`edgeleuk.runtime.wire`. Image bytes are decoded on the server with edgeleuk's own
decoder, so an answer equals what ``predict`` gives for the same file.

Needs the ``ray`` extra (``pip install 'edgeleuk[cpu,ray]'``); torch-free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk import __version__
from edgeleuk.cluster import RAY_FIX, connect, import_ray
from edgeleuk.cluster.placement import fit_serve
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.io.imageio import decode_bytes
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime import wire
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.registry import AUTO, BACKENDS, explicit_only

log = logging.getLogger(__name__)

#: One image in, ``(logit, prob)`` out, awaited: the deployment's ``@serve.batch`` method.
Infer = Callable[[np.ndarray], Awaitable[tuple[float, float]]]

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
        max_ongoing: Requests a replica accepts at once before Serve queues or sheds them.
        host: Address the HTTP proxy binds (``0.0.0.0`` to accept other machines).
        port: HTTP port.
        address: Ray cluster to join (``auto``, ``ray://...``); None starts Ray on this machine.
        engine_fields: Backend option fields by name (``precision``, ``tensorrt``...), as
            :meth:`Classifier.load` takes them; every replica opens its engine with them.
    """

    backend: str = "auto"
    replicas: int | None = 1
    threads: int | None = 1
    gpus: float = 0.0
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    max_ongoing: int = 64
    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None
    engine_fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.replicas or 1, self.threads or 1, self.max_batch, self.max_ongoing) < 1:
            raise UsageError("replicas, threads, max batch and max ongoing requests must be >= 1")
        if self.batch_wait_ms < 0 or self.gpus < 0:
            raise UsageError("batch wait and GPUs per replica must be >= 0")


def import_serve() -> Any:
    """Ray Serve, or a usage error naming the extra to install (exit 2)."""
    import_ray()
    try:
        from ray import serve
    except ImportError as exc:
        raise BackendUnavailable(f"Ray Serve is not installed ({exc}); {RAY_FIX}") from exc
    return serve


def model_identity(model_path: Path) -> dict[str, str]:
    """Which model answers: file name and SHA-256 (every answer carries it)."""
    return {"file": Path(model_path).name, "sha256": wire.model_sha256(model_path)}


class ModelService:
    """What one replica does, free of Ray and HTTP so it is testable on its own.

    Args:
        model_path: Exported ``.onnx``/``.xml`` on the serving machine.
        backend: Backend name for :meth:`Classifier.load`.
        threads: Engine threads.
        engine_fields: Backend option fields by name (:attr:`ServeOptions.engine_fields`).
    """

    def __init__(self, model_path: str, backend: str, threads: int,
                 engine_fields: Mapping[str, Any] | None = None) -> None:
        self.clf = Classifier.load(model_path, backend, threads=threads, batch_size=wire.MAX_IMAGES,
                                   **dict(engine_fields or {}))
        self.model = model_identity(Path(model_path))
        self.size = self.clf.input_size

    def metadata(self) -> dict[str, Any]:
        """The ``/metadata`` answer: everything a client checks before trusting the answers."""
        info = self.clf.info
        export = self.clf.export_info
        return {
            "model": self.model,
            "edgeleuk_version": __version__,
            "threshold": self.clf.threshold,
            "threshold_source": self.clf.threshold_source,
            "class_names": {str(k): v for k, v in self.clf.meta.class_names.items()},
            "precision": export.get("precision"),
            "gates": export.get("gate"),
            "input_size": self.size,
            "max_images": wire.MAX_IMAGES,
            "raw": self.clf.backend.metadata(),
            # default=str: engine details may hold paths or enums; the answer must stay JSON.
            "backend": json.loads(json.dumps(dataclasses.asdict(info), default=str)),
        }

    def infer(self, images: list[np.ndarray]) -> list[tuple[float, float]]:
        """``(logit, prob)`` per image, one engine call; raises on any engine fault.

        A non-finite output is a fault of the engine, not an answer: it raises too.
        """
        predictions = self.clf.predict_arrays(np.stack(images))
        bad = [p.error for p in predictions if not p.ok]
        if bad:
            raise RuntimeError(bad[0])
        return [(float(p.logit), float(p.prob_all)) for p in predictions]

    def record(self, logit: float, prob: float, adjustments: tuple[str, ...] = ()) -> dict[str, Any]:
        """One image's answer at the model's threshold."""
        return wire.prediction_record(
            "ok", threshold=self.clf.threshold, prob_all=prob, logit=logit,
            label=self.clf.meta.label_name(prob >= self.clf.threshold), adjustments=adjustments,
        )

    def decode(self, body: bytes) -> tuple[np.ndarray, tuple[str, ...]]:
        """Decode one image file's bytes as ``predict`` does.

        Raises:
            WireError: 400 for an empty body, 422 for bytes that are no usable image.
        """
        if not body:
            raise wire.WireError(400, "empty request body (empty file (0 bytes)); send the image file's bytes")
        decoded = decode_bytes(body, self.size)
        if not decoded.ok:
            raise wire.WireError(422, f"cannot use this image: {decoded.error}")
        return decoded.image, decoded.adjustments


    async def _predict(self, content_type: str | None, body: bytes, infer: Infer) -> list[dict[str, Any]]:
        if wire.body_kind(content_type) == "tensor":
            images = wire.decode_tensor(body, self.size)
            outs = await asyncio.gather(*(infer(img) for img in images))
            return [self.record(lo, pr) for lo, pr in outs]
        image, adjustments = await asyncio.to_thread(self.decode, body)
        logit, prob = await infer(image)
        return [self.record(logit, prob, adjustments)]

    async def respond(
        self, method: str, path: str, content_type: str | None, body: bytes, infer: Infer
    ) -> tuple[int, dict[str, Any]]:
        """Route one HTTP request: ``(status, JSON payload)``.

        Args:
            method: HTTP method.
            path: URL path (the app is served at ``/``).
            content_type: The request's ``Content-Type``.
            body: The request body.
            infer: Awaitable ``image -> (logit, prob)``; the deployment passes its batched one.
        """
        path = path.rstrip("/") or "/"
        try:
            if path == wire.HEALTH and method == "GET":
                return 200, {"status": "ready", "model": self.model}
            if path == wire.METADATA and method == "GET":
                return 200, self.metadata()
            if path == wire.PREDICT and method == "POST":
                return 200, {"model": self.model, "predictions": await self._predict(content_type, body, infer)}
            routes = f"GET {wire.HEALTH}, GET {wire.METADATA}, POST {wire.PREDICT}"
            return 404, {"error": f"no route {method} {path}; routes: {routes}"}
        except wire.WireError as exc:
            return exc.status, {"error": str(exc), "model": self.model}
        except Exception as exc:  # an engine fault: 500, never a guessed answer
            log.exception("inference failed")
            return 500, {"error": f"engine fault: {exc}", "model": self.model}


def _json(status: int, payload: dict[str, Any]) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(payload, status_code=status)


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
                     engine_fields: dict[str, Any]) -> None:
            self.service = ModelService(path, backend, threads, engine_fields)
            self._infer.set_max_batch_size(max_batch)
            self._infer.set_batch_wait_timeout_s(wait_s)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
        async def _infer(self, images: list[np.ndarray]) -> list[tuple[float, float]]:
            # The engine releases the GIL: run it off the event loop so health checks still answer.
            return await asyncio.to_thread(self.service.infer, images)

        async def __call__(self, request: Request) -> Any:
            length = request.headers.get("content-length") or "0"
            if not length.isdigit() or int(length) > wire.MAX_BODY:
                return _json(413, {"error": f"request body over {wire.MAX_BODY} bytes (or a bad length); "
                                            f"send at most {wire.MAX_IMAGES} images per request"})
            body = await request.body()
            status, payload = await self.service.respond(
                request.method, request.url.path, request.headers.get("content-type"), body, self._infer
            )
            return _json(status, payload)

    return ClassifierDeployment.bind(
        str(Path(model_path).resolve()), options.backend, options.threads, options.max_batch,
        options.batch_wait_ms / 1000.0, dict(options.engine_fields),
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


def start(model_path: Path, options: ServeOptions | None = None) -> str:
    """Start (or join) Ray, deploy the model and return the base URL once replicas are ready.

    Raises:
        UsageError: Missing or unsupported model file (checked before Ray starts).
        BackendUnavailable: Ray is not installed.
    """
    options = options or ServeOptions()
    read_model_meta(Path(model_path))  # a missing/foreign model is a usage error, not a dead replica
    _check_backend(options.backend)
    serve = import_serve()
    options = fit_serve(connect(options.address), options)  # exit 2 now, not replicas waiting for a node
    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(build_app(Path(model_path), options), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    return f"http://{host}:{options.port}"


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
    echo(f"  clients: edgeleuk predict DIR --model {Path(model_path).name} --backend remote --server {url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        echo("stopping")
    finally:
        stop()
