"""Agreement with the PyTorch original, accuracy against labels, and the parity gates.

The gates are the export gates, applied per benchmark row according to the
precision that actually runs (the model file's precision, or bf16 when OpenVINO
is asked to compute in bf16):

* fp32: max |delta logit| <= 1e-4 and 100% label agreement;
* fp16 and bf16: >= 99.5% agreement;
* int8: >= 99% agreement and weighted F1 at most 0.5 point below PyTorch's (when labels are known).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeleuk.metrics import binary_metrics


@dataclass(frozen=True)
class Gate:
    """Limits a row must meet against the PyTorch reference.

    Attributes:
        name: Precision class the gate belongs to.
        min_agreement: Smallest fraction of cells with the same label as PyTorch.
        max_logit_delta: Largest allowed max |delta logit|; None: not checked.
        max_f1_drop: Largest allowed drop of weighted F1 (0..1 scale); None: not checked.
    """

    name: str
    min_agreement: float
    max_logit_delta: float | None = None
    max_f1_drop: float | None = None

    def describe(self) -> str:
        parts = [f"agreement >= {self.min_agreement:.1%}"]
        if self.max_logit_delta is not None:
            parts.append(f"max|dlogit| <= {self.max_logit_delta:g}")
        if self.max_f1_drop is not None:
            parts.append(f"F1 drop <= {self.max_f1_drop * 100:g} point")
        return f"{self.name}: " + ", ".join(parts)


GATES: dict[str, Gate] = {
    "fp32": Gate("fp32", min_agreement=1.0, max_logit_delta=1e-4),
    "fp16": Gate("fp16", min_agreement=0.995),
    "bf16": Gate("bf16", min_agreement=0.995),
    "int8": Gate("int8", min_agreement=0.99, max_f1_drop=0.005),
}

_ALIASES = {
    "fp32": "fp32", "f32": "fp32", "float32": "fp32", "float": "fp32",
    "fp16": "fp16", "f16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8", "i8": "int8", "u8": "int8", "qdq": "int8",
}


def normalise_precision(name: str | None) -> str:
    """Map the spellings found in model metadata onto ``fp32``/``fp16``/``bf16``/``int8``.

    Unknown or missing precision is treated as fp32, the strictest gate.
    """
    if not name:
        return "fp32"
    key = str(name).strip().lower()
    for alias, canonical in _ALIASES.items():
        if key == alias or key.startswith((alias + "-", alias + "_")):
            return canonical
    return "fp32"


def gate_for(precision: str) -> Gate:
    """The gate of a precision class (see :func:`normalise_precision`)."""
    return GATES[normalise_precision(precision)]


@dataclass(frozen=True)
class Parity:
    """How one row's outputs compare with PyTorch's on the same cells.

    Attributes:
        n: Cells compared.
        agreement: Fraction with the same label at the model's threshold.
        disagreements: Cells whose label differs.
        max_dprob: Largest |delta probability|.
        max_dlogit: Largest |delta logit|.
    """

    n: int
    agreement: float
    disagreements: int
    max_dprob: float
    max_dlogit: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    ref_logits: np.ndarray, ref_probs: np.ndarray, logits: np.ndarray, probs: np.ndarray, threshold: float,
) -> Parity:
    """Compare one row's outputs with the reference's.

    Raises:
        ValueError: The arrays differ in length or are empty.
    """
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (ref_logits, ref_probs, logits, probs)]
    if len({a.size for a in arrays}) != 1 or arrays[0].size == 0:
        raise ValueError(f"cannot compare outputs of sizes {[a.size for a in arrays]}")
    rl, rp, lg, pr = arrays
    same = (rp >= threshold) == (pr >= threshold)
    return Parity(
        n=int(rl.size), agreement=float(same.mean()), disagreements=int((~same).sum()),
        max_dprob=float(np.max(np.abs(pr - rp))), max_dlogit=float(np.max(np.abs(lg - rl))),
    )


def check_gate(gate: Gate, parity: Parity, f1: float | None = None, ref_f1: float | None = None) -> list[str]:
    """Why a row breaches its gate; empty when it passes.

    Args:
        gate: The row's gate.
        parity: Its comparison with PyTorch.
        f1: The row's weighted F1 (None without labels).
        ref_f1: PyTorch's weighted F1 on the same cells.
    """
    failures = []
    # Compare counts, not rounded fractions: 100% must mean no disagreement at all.
    allowed = int(np.floor((1.0 - gate.min_agreement) * parity.n + 1e-9))
    if parity.disagreements > allowed:
        failures.append(
            f"agreement {parity.agreement:.2%} ({parity.disagreements}/{parity.n} labels differ) "
            f"< {gate.min_agreement:.1%}"
        )
    if gate.max_logit_delta is not None and parity.max_dlogit > gate.max_logit_delta:
        failures.append(f"max|dlogit| {parity.max_dlogit:.3g} > {gate.max_logit_delta:g}")
    if gate.max_f1_drop is not None and f1 is not None and ref_f1 is not None:
        drop = ref_f1 - f1
        if drop > gate.max_f1_drop + 1e-12:
            failures.append(f"F1 drop {drop * 100:.2f} point > {gate.max_f1_drop * 100:g}")
    return failures


def label_metrics(labels: np.ndarray | None, probs: np.ndarray, threshold: float) -> dict[str, float] | None:
    """Weighted F1, sensitivity (ALL recall) and specificity (HEM recall); None without labels."""
    if labels is None:
        return None
    m = binary_metrics(np.asarray(labels), np.asarray(probs), threshold=threshold)
    return {"f1": float(m["f1"]), "sensitivity": float(m["sensitivity"]), "specificity": float(m["specificity"])}
