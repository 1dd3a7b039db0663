"""The parity gate: the exported file, run on its engines, against the PyTorch original.

The reference is :class:`~edgeleuk.reference.TorchReference`, the paper's eager
PIL-rotation path. Each engine in the profile runs the file on the gate cells;
the profile's thresholds on |logit delta|, label agreement and weighted-F1 drop
decide. Batch sizes (1 and 5 by default) must run and agree with each other.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.exporting.calib import ImageSet
from edgeleuk.exporting.engines import Engine, open_engine, unavailable
from edgeleuk.exporting.profile import ExportProfile
from edgeleuk.metrics import binary_metrics

log = logging.getLogger(__name__)


def _sig(x: float | None, digits: int = 4) -> float | None:
    # Rounded for the file: stable bytes across runs, still precise enough to read.
    return None if x is None else float(f"{x:.{digits}g}")


@dataclass
class EngineCheck:
    """The verdict of one engine.

    Attributes:
        engine: Engine key.
        status: ``passed``, ``failed`` or ``skipped``.
        reason: Why skipped, or what failed.
        version: Engine library and version.
        max_abs_logit_delta: Largest |logit - reference logit|.
        mean_abs_logit_delta: Mean |logit - reference logit|.
        agreement: Fraction of cells given the reference's label.
        f1_reference: Weighted F1 of the reference (labelled cells only).
        f1_model: Weighted F1 of the exported file.
        batch_max_delta: Largest logit difference between batch sizes.
        breaches: Thresholds not met.
    """

    engine: str
    status: str = "passed"
    reason: str | None = None
    version: str | None = None
    max_abs_logit_delta: float | None = None
    mean_abs_logit_delta: float | None = None
    agreement: float | None = None
    f1_reference: float | None = None
    f1_model: float | None = None
    batch_max_delta: float | None = None
    breaches: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for people."""
        head = f"  {self.engine:<17}{self.status.upper():<8}"
        if self.status == "skipped" or self.agreement is None:
            return head + (self.reason or "")
        text = (f"{head}max|dlogit| {self.max_abs_logit_delta:.2e}  agreement {100 * self.agreement:.2f} %"
                f"  batch-size delta {self.batch_max_delta:.1e}")
        if self.f1_model is not None:
            text += f"  weighted F1 {self.f1_reference:.4f} -> {self.f1_model:.4f}"
        return text + ("".join(f"\n    breach: {b}" for b in self.breaches))


@dataclass
class GateReport:
    """Everything the gate measured; stored in the model file's ``edgeleuk.export``."""

    data: str
    n: int
    labelled: bool
    thresholds: dict[str, Any]
    checks: list[EngineCheck]

    @property
    def passed(self) -> bool:
        """No engine failed and at least one ran."""
        statuses = {c.status for c in self.checks}
        return "failed" not in statuses and "passed" in statuses

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        for check in d["checks"]:
            if check["status"] == "skipped":
                check["status"] = f"skipped: {check.pop('reason')}"
        return d

    def describe(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        head = f"parity gate {verdict} vs the PyTorch reference on {self.n} cells ({self.data})"
        return "\n".join([head, *(c.line() for c in self.checks)])


def run_batches(engine: Engine, images: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Run all images in batches; check every output is float32 [b] and finite."""
    logits, probs = [], []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        logit, prob = engine.run(chunk)
        for name, out in (("logit", logit), ("prob", prob)):
            if out.dtype != np.float32 or out.shape != (len(chunk),) or not np.isfinite(out).all():
                raise ValueError(f"output {name} is {out.dtype} {out.shape} (finite: {np.isfinite(out).all()}), "
                                 f"expected finite float32 [{len(chunk)}]")
        logits.append(logit)
        probs.append(prob)
    return np.concatenate(logits), np.concatenate(probs)


def _compare(check: EngineCheck, logits: np.ndarray, probs: np.ndarray, ref: tuple[np.ndarray, np.ndarray],
             labels: np.ndarray | None, threshold: float) -> None:
    delta = np.abs(logits.astype(np.float64) - ref[0])
    check.max_abs_logit_delta = _sig(float(delta.max()))
    check.mean_abs_logit_delta = _sig(float(delta.mean()))
    check.agreement = _sig(float(np.mean((probs >= threshold) == (ref[1] >= threshold))), 6)
    if labels is not None:
        check.f1_reference = _sig(binary_metrics(labels, ref[1], threshold)["f1"], 6)
        check.f1_model = _sig(binary_metrics(labels, probs, threshold)["f1"], 6)


def _breaches(check: EngineCheck, profile: ExportProfile) -> list[str]:
    out = []
    limit = profile.max_abs_logit_delta
    if limit is not None and check.max_abs_logit_delta > limit:
        out.append(f"max |logit delta| {check.max_abs_logit_delta:.3g} > {limit:g}")
    if limit is not None and check.batch_max_delta > limit:
        out.append(f"batch sizes {list(profile.batch_sizes)} disagree by {check.batch_max_delta:.3g} > {limit:g}")
    if check.agreement < profile.min_agreement:
        out.append(f"label agreement {100 * check.agreement:.2f} % < {100 * profile.min_agreement:.2f} %")
    if profile.max_f1_drop is not None and check.f1_model is not None:
        drop = check.f1_reference - check.f1_model
        if drop > profile.max_f1_drop:
            out.append(f"weighted-F1 drop {100 * drop:.2f} points > {100 * profile.max_f1_drop:.2f}")
    return out


def check_engine(name: str, path: Path, profile: ExportProfile, data: ImageSet,
                 ref: tuple[np.ndarray, np.ndarray], threshold: float) -> EngineCheck:
    """Run one engine through the gate; never raises for what the file does wrong."""
    reason = unavailable(name)
    if reason:
        return EngineCheck(name, status="skipped", reason=reason)
    check = EngineCheck(name)
    try:
        started = time.perf_counter()
        engine = open_engine(name, path)
        check.version = engine.version
        largest = max(profile.batch_sizes)
        logits, probs = run_batches(engine, data.images, largest)
        # The full run already used the largest batch size; the others are run again and compared.
        per_size = [run_batches(engine, data.images[:b], b)[0] - logits[:b]
                    for b in profile.batch_sizes if b != largest]
        log.info("%s: %d cells in %.1f s", name, len(data), time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - not loading or running there is the gate's finding
        check.status, check.reason = "failed", f"{type(exc).__name__}: {exc}"
        check.breaches = [f"does not run on {name}: {check.reason}"]
        return check
    check.batch_max_delta = _sig(max((float(np.abs(d).max()) for d in per_size), default=0.0))
    _compare(check, logits, probs, ref, data.labels, threshold)
    check.breaches = _breaches(check, profile)
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
        profile: Thresholds and engines.
        data: Gate cells.
        ref: The PyTorch reference's outputs on ``data`` (:func:`reference_outputs`).
    """
    checks = [check_engine(name, path, profile, data, (ref.logits, ref.probs), ref.threshold)
              for name in profile.gate_engines]
    thresholds = {"max_abs_logit_delta": profile.max_abs_logit_delta, "min_agreement": profile.min_agreement,
                  "max_f1_drop": profile.max_f1_drop, "batch_sizes": list(profile.batch_sizes)}
    return GateReport(data=data.source, n=len(data), labelled=data.labels is not None,
                      thresholds=thresholds, checks=checks)
