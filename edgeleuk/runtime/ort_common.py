"""What the two ONNX Runtime backends (``cpu`` and ``cuda``) share.

``onnxruntime`` is imported only when a session is made, so importing this
module costs nothing on machines that run OpenVINO only.
"""

from __future__ import annotations

import abc
import importlib.metadata
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgeleuk.core.contract import EXPORT_KEY, LOGIT, OUTPUT_NAMES, VIEW_LOGITS, VIEWS_NAME, TensorSpec
from edgeleuk.core.errors import BackendUnavailable, CheckpointError, UsageError
from edgeleuk.core.meta import parse_json
from edgeleuk.runtime.base import Backend, BackendInfo, BackendOptions, ExtrasResult
from edgeleuk.runtime.views import onnx_views_source

log = logging.getLogger(__name__)

CPU_DIST = "onnxruntime"
GPU_DIST = "onnxruntime-gpu"


def installed_ort_distributions() -> set[str]:
    """Names of the installed ONNX Runtime wheels (``onnxruntime``, ``onnxruntime-gpu``...).

    Both the CPU and the GPU wheel install the same ``onnxruntime`` module, so
    only the distribution list tells which one Python will actually import.
    """
    names = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("onnxruntime"):
            names.add(name)
    return names


def import_ort() -> Any:
    """Import ``onnxruntime`` or say how to install it."""
    try:
        import onnxruntime  # lazy: importing edgeleuk.runtime loads no engine (runtime/__init__)
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install 'edgeleuk[cpu]' (or 'edgeleuk[gpu]' for CUDA)"
        ) from exc
    return onnxruntime


# Errors that say the model file itself is broken: ONNX Runtime's for an unparsable or invalid
# graph or a missing file, protobuf's and onnx's when the views entry is opened with ``onnx``.
_BAD_MODEL_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "DecodeError", "ValidationError")
# ONNX Runtime reports external data outside the model's folder (or missing) as a plain FAIL.
_BAD_MODEL_WORDS = ("external data", "protobuf parsing failed", "load model from")

T = TypeVar("T")


def _broken_model(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps, e.g. the cuda backend's BackendUnavailable) blames the model file."""
    for err in (exc, exc.__cause__):
        if err is not None and (type(err).__name__ in _BAD_MODEL_ERRORS
                                or any(w in str(err).lower() for w in _BAD_MODEL_WORDS)):
            return True
    return False


def open_model(path: Path, make: Callable[[], T]) -> T:
    """``make()`` (a session, or the model opened with ``onnx``), with a broken file a usage error.

    A truncated or corrupt ``.onnx``, or one whose external data lies outside its folder, is
    the file's fault: exit 2 naming it, never a traceback. Other failures pass unchanged.

    Raises:
        UsageError: The model file cannot be parsed or loaded.
    """
    try:
        return make()
    except Exception as exc:
        if not _broken_model(exc):
            raise
        raise UsageError(
            f"{path}: not a usable ONNX model (corrupt, truncated, or with external data outside its "
            f"folder): {str(exc).rstrip('. ')}. Copy or export the model file again"
        ) from exc


_ORT_TYPES = {"float": "float32", "double": "float64"}  # ORT says tensor(float); numpy says float32


def _spec(arg: Any) -> TensorSpec:
    """An ONNX Runtime ``NodeArg`` as a :class:`TensorSpec` (symbolic dimensions become None)."""
    kind = str(arg.type).removeprefix("tensor(").removesuffix(")")
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or ()))
    return TensorSpec(arg.name, _ORT_TYPES.get(kind, kind), shape)


def session_options(ort: Any, threads: int | None) -> Any:
    """ONNX Runtime session options for ``threads`` (None keeps ONNX Runtime's default)."""
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1  # the graph is one chain; extra pools only oversubscribe
    return so


class OrtBackend(Backend):
    """An ONNX Runtime ``InferenceSession`` on the providers a subclass asks for.

    ``InferenceSession.run`` is thread-safe, so one instance may serve many threads.
    """

    reads = ("onnx",)
    libraries = (CPU_DIST, GPU_DIST)

    @abc.abstractmethod
    def _providers(self, ort: Any, options: Any) -> list[Any]:
        """Providers to request, best first, given this backend's own options record."""

    def _create_session(self, ort: Any, so: Any, providers: list[Any]) -> Any:
        # A provider failing in run() must raise, not quietly rebuild the session on the next provider.
        # enable_fallback=0 covers session creation in the versions that read it; 1.18-1.22
        # ignore it, and disable_fallback() (in every version) covers run().
        session = ort.InferenceSession(self._source, so, providers=providers, enable_fallback=0)
        session.disable_fallback()
        return session

    def _check_session(self, session: Any) -> None:
        """Raise BackendUnavailable when the providers in use are not the ones this backend promises."""

    def __init__(self, model_path: Path, options: BackendOptions) -> None:
        self.model_path = Path(model_path)
        self.model_format(self.model_path)
        reason = self.availability()
        if reason:
            raise BackendUnavailable(reason)
        self._ort = import_ort()
        self.options = options
        self._all_views: np.ndarray | None = None  # set when the views entry is open
        self._source: Any = str(self.model_path)
        if options.views_input:
            self._source, self._all_views = open_model(
                self.model_path, lambda: onnx_views_source(self.model_path, options.extras))
        so = session_options(self._ort, options.threads)
        providers = self._providers(self._ort, options.of(type(self)))
        self._session = open_model(self.model_path, lambda: self._create_session(self._ort, so, providers))
        self._check_session(self._session)
        self._source = None  # the serialized model (views entry open) is not needed once the session holds it
        self._input = self._session.get_inputs()[0].name
        self._threads = so.intra_op_num_threads
        outputs = {o.name for o in self._session.get_outputs()} if options.extras else set()
        self.extras = tuple(name for name in options.extras if name in outputs)  # an older file has none

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feed = {self._input: np.ascontiguousarray(batch)}
        if self._all_views is not None:
            feed[VIEWS_NAME] = self._all_views
        logits, probs = self._session.run(list(OUTPUT_NAMES), feed)
        return np.asarray(logits, np.float32).reshape(-1), np.asarray(probs, np.float32).reshape(-1)

    def run_views(self, batch: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._all_views is None:
            return super().run_views(batch, views)
        feed = {self._input: np.ascontiguousarray(batch), VIEWS_NAME: np.asarray(views, np.int64)}
        logits, view_logits = self._session.run([LOGIT, VIEW_LOGITS], feed)
        return np.asarray(logits, np.float32).reshape(-1), np.asarray(view_logits, np.float32)

    def run_extras(self, batch: np.ndarray, names: tuple[str, ...]) -> ExtrasResult:
        self._unopened(names)
        feed = {self._input: np.ascontiguousarray(batch)}
        if self._all_views is not None:
            feed[VIEWS_NAME] = self._all_views
        logits, probs, *rest = self._session.run([*OUTPUT_NAMES, *names], feed)
        extras = {n: np.asarray(v, np.float32) for n, v in zip(names, rest, strict=True)}
        return np.asarray(logits, np.float32).reshape(-1), np.asarray(probs, np.float32).reshape(-1), extras

    def run_views_extras(self, batch: np.ndarray, views: np.ndarray,
                         names: tuple[str, ...]) -> ExtrasResult:
        if self._all_views is None:
            return super().run_views_extras(batch, views, names)
        self._unopened(names)
        feed = {self._input: np.ascontiguousarray(batch), VIEWS_NAME: np.asarray(views, np.int64)}
        logits, view_logits, *rest = self._session.run([LOGIT, VIEW_LOGITS, *names], feed)
        extras = {n: np.asarray(v, np.float32) for n, v in zip(names, rest, strict=True)}
        return np.asarray(logits, np.float32).reshape(-1), np.asarray(view_logits, np.float32), extras

    def metadata(self) -> dict[str, str]:
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def graph_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        return [_spec(a) for a in self._session.get_inputs()], [_spec(a) for a in self._session.get_outputs()]

    def info(self) -> BackendInfo:
        try:
            precision = parse_json(self.metadata().get(EXPORT_KEY) or "{}").get("precision", "as exported")
        except (CheckpointError, AttributeError):  # unreadable, or not an object
            precision = "as exported"
        return BackendInfo(
            name=self.name,
            engine=f"onnxruntime {self._ort.__version__}",
            providers=tuple(self._session.get_providers()),
            precision=str(precision),
            details={"threads": self._threads or "default", "wheels": sorted(installed_ort_distributions())},
        )
