"""The parity gate: the exported file, on the runtime backends, against the PyTorch original.

The reference is :class:`~edgeleuk.modeling.reference.TorchReference`, the paper's eager
PIL-rotation path. Each backend the profile names opens the file exactly as
``predict`` does (``edgeleuk.runtime.registry``: the same provider checks, thread
settings and device choice) and runs the gate cells; :mod:`edgeleuk.evaluation.parity`
compares the outputs and the profile's thresholds decide. Batch sizes (1 and 5
by default) must run and agree with each other. ``bench`` uses the same
comparison and report.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.errors import BackendUnavailable
from edgeleuk.evaluation.parity import Parity, Thresholds, breaches, compare
from edgeleuk.exporting.imagesets import ImageSet
from edgeleuk.exporting.profile import ExportProfile
from edgeleuk.runtime.base import Backend
from edgeleuk.runtime.registry import BACKENDS, open_backend

log = logging.getLogger(__name__)


@dataclass
class EngineCheck:
    """The verdict of one backend.

    Attributes:
        engine: Backend name.
        status: ``passed``, ``failed`` or ``skipped``.
        reason: Why skipped, or what failed.
        version: Engine library and version, as the backend reports it.
        providers: Providers or devices in use, read back from the engine.
        parity: The comparison with the reference (None when it did not run).
        breaches: Thresholds not met.
    """

    engine: str
    status: str = "passed"
    reason: str | None = None
    version: str | None = None
    providers: list[str] = field(default_factory=list)
    parity: Parity | None = None
    breaches: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for people."""
        head = f"  {self.engine:<17}{self.status.upper():<8}"
        if self.status == "skipped" or self.parity is None:
            return head + (self.reason or "")
        return head + self.parity.line() + "".join(f"\n    breach: {b}" for b in self.breaches)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "parity"}
        d["parity"] = None if self.parity is None else self.parity.to_dict()
        if self.status == "skipped":
            d["status"] = f"skipped: {d.pop('reason')}"
        return d


@dataclass
class GateReport:
    """Everything the gate measured; stored in the model file's ``edgeleuk.export``."""

    data: str
    n: int
    labelled: bool
    thresholds: Thresholds
    batch_sizes: tuple[int, ...]
    checks: list[EngineCheck]

    @property
    def passed(self) -> bool:
        """No engine failed and at least one ran."""
        statuses = {c.status for c in self.checks}
        return "failed" not in statuses and "passed" in statuses

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "n": self.n, "labelled": self.labelled,
                "thresholds": self.thresholds.to_dict(), "batch_sizes": list(self.batch_sizes),
                "checks": [c.to_dict() for c in self.checks], "passed": self.passed}

    def describe(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        head = (f"parity gate {verdict} vs the PyTorch reference on {self.n} cells ({self.data}); "
                f"{self.thresholds.describe()}")
        return "\n".join([head, *(c.line() for c in self.checks)])


def run_batches(backend: Backend, images: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Run all images in batches; check every output is [b] and finite."""
    logits, probs = [], []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        logit, prob = backend.run(chunk)
        for name, out in (("logit", logit), ("prob", prob)):
            if out.shape != (len(chunk),) or not np.isfinite(out).all():
                raise ValueError(f"output {name} is {out.dtype} {out.shape} (finite: "
                                 f"{np.isfinite(out).all()}), expected finite float32 [{len(chunk)}]")
        logits.append(logit)
        probs.append(prob)
    return np.concatenate(logits), np.concatenate(probs)


def _failed(check: EngineCheck, name: str, exc: Exception) -> EngineCheck:
    check.status, check.reason = "failed", f"{type(exc).__name__}: {exc}"
    check.breaches = [f"does not run on {name}: {check.reason}"]
    return check


def check_engine(name: str, path: Path, profile: ExportProfile, data: ImageSet,
                 ref: ReferenceOutputs) -> EngineCheck:
    """Run the file on backend ``name`` through the gate; never raises for what the file does wrong."""
    reason = BACKENDS[name].availability()
    if reason:
        return EngineCheck(name, status="skipped", reason=reason)
    check = EngineCheck(name)
    try:
        backend = open_backend(path, name)  # default options: what predict deploys
    except BackendUnavailable as exc:
        # The engine cannot run on this machine (a GPU wheel but no working GPU): not the file's fault.
        return EngineCheck(name, status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - not loading there is the gate's finding
        return _failed(check, name, exc)
    try:
        started = time.perf_counter()
        info = backend.info()
        check.version, check.providers = info.engine, list(info.providers)
        largest = max(profile.batch_sizes)
        logits, probs = run_batches(backend, data.images, largest)
        # The full run already used the largest batch size; the others are run again and compared.
        per_size = [run_batches(backend, data.images[:b], b)[0] - logits[:b]
                    for b in profile.batch_sizes if b != largest]
        log.info("%s: %d cells in %.1f s", name, len(data), time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - not running there is the gate's finding
        return _failed(check, name, exc)
    batch_delta = max((float(np.abs(d).max()) for d in per_size), default=0.0)
    check.parity = compare(ref.logits, ref.probs, logits, probs, ref.threshold, data.labels, batch_delta)
    check.breaches = breaches(profile.thresholds(), check.parity)
    check.status = "failed" if check.breaches else "passed"
    return check


@dataclass(frozen=True)
class ReferenceOutputs:
    """The PyTorch reference's answers on the gate cells, computed once per export.

    Shared by accuracy-controlled INT8 quantization and every gate engine.

    Attributes:
        logits: float64 [N] mean-over-rotations logits.
        probs: float32 [N] sigmoid of the logits.
        threshold: Probability at or above which a cell is called ALL.
    """

    logits: np.ndarray
    probs: np.ndarray
    threshold: float

    @property
    def labels(self) -> np.ndarray:
        """The reference's calls, 1 = ALL."""
        return (self.probs >= self.threshold).astype(np.int64)


def reference_outputs(reference: Any, data: ImageSet) -> ReferenceOutputs:
    """Run the reference on the gate cells.

    Args:
        reference: Object with ``predict_arrays`` and ``meta``, normally a ``TorchReference``.
        data: Gate cells.
    """
    started = time.perf_counter()
    logits, probs = reference.predict_arrays(data.images)
    log.info("parity gate: PyTorch reference on %d cells in %.1f s", len(data), time.perf_counter() - started)
    return ReferenceOutputs(logits.astype(np.float64), probs, reference.meta.threshold)


def run_gate(path: Path, profile: ExportProfile, data: ImageSet, ref: ReferenceOutputs) -> GateReport:
    """Gate the file at ``path``.

    Args:
        path: The exported file (``.onnx`` or ``.xml``) as written.
        profile: Thresholds and the backends to run on.
        data: Gate cells.
        ref: The PyTorch reference's outputs on ``data`` (:func:`reference_outputs`).
    """
    checks = [check_engine(name, path, profile, data, ref) for name in profile.gate_engines]
    return GateReport(data=data.source, n=len(data), labelled=data.labels is not None,
                      thresholds=profile.thresholds(), batch_sizes=profile.batch_sizes, checks=checks)
