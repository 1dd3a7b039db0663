"""Agreement with the PyTorch original: one comparison and one report, for ``export`` and ``bench``.

``export`` gates each engine of its profile with these; ``bench`` gates each row.
The thresholds come only from export profiles: ``export`` uses the profile it
runs, ``bench`` the profile recorded in the model file's export record (or, for
files whose record lacks what a row needs, the profile file of that name). A
profile's ``[compute.<precision>]`` table holds the thresholds for running its
file at a lower compute precision than it stores (OpenVINO computing an fp32
file in bf16).

Torch-free: the reference outputs are computed elsewhere and handed in.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeleuk.core.config import DEFAULT_EXPORT_PROFILE, resolve_named
from edgeleuk.core.errors import ConfigError
from edgeleuk.evaluation.metrics import binary_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_ALIASES = {
    "fp32": "fp32", "f32": "fp32", "float32": "fp32", "float": "fp32",
    "fp16": "fp16", "f16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8", "i8": "int8", "u8": "int8", "qdq": "int8",
}


def normalise_precision(name: str | None) -> str:
    """Map the spellings found in model metadata onto ``fp32``/``fp16``/``bf16``/``int8``.

    Unknown or missing precision is treated as fp32, the strictest.
    """
    if not name:
        return "fp32"
    key = str(name).strip().lower()
    for alias, canonical in _ALIASES.items():
        if key == alias or key.startswith((alias + "-", alias + "_")):
            return canonical
    return "fp32"


def _sig(x: float | None, digits: int = 4) -> float | None:
    # Rounded for records: stable bytes across runs, still precise enough to read.
    return None if x is None else float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class Thresholds:
    """Limits an engine's outputs must meet against the reference.

    Attributes:
        name: Where they come from (profile name, and the compute precision for an override).
        min_agreement: Smallest fraction of cells given the reference's label.
        max_abs_logit_delta: Largest allowed |logit - reference logit| (also between batch
            sizes); None: not checked.
        max_f1_drop: Largest allowed drop of weighted F1 (0..1) when labels are known; None: not checked.
    """

    name: str
    min_agreement: float = 1.0
    max_abs_logit_delta: float | None = None
    max_f1_drop: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.min_agreement <= 1.0:
            raise ConfigError(f"{self.name}: min_agreement must lie in (0, 1], got {self.min_agreement}")

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> Thresholds:
        """The threshold keys of a profile table (other keys are ignored).

        Raises:
            ConfigError: A threshold that is not a number.
        """
        keys = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        values = {k: table[k] for k in keys if table.get(k) is not None}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name}: {key} must be a number, got {value!r}")
        return cls(name, **{k: float(v) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        parts = [f"agreement >= {self.min_agreement:.1%}"]
        if self.max_abs_logit_delta is not None:
            parts.append(f"max|dlogit| <= {self.max_abs_logit_delta:g}")
        if self.max_f1_drop is not None:
            parts.append(f"F1 drop <= {self.max_f1_drop * 100:g} point")
        return f"{self.name}: " + ", ".join(parts)


THRESHOLD_KEYS = tuple(f.name for f in dataclasses.fields(Thresholds) if f.name != "name")


@dataclass(frozen=True)
class Parity:
    """How one engine's outputs compare with the reference's on the same cells.

    Attributes:
        n: Cells compared.
        agreement: Fraction given the reference's label at the model's threshold.
        disagreements: Cells whose label differs.
        max_abs_logit_delta: Largest |logit - reference logit|.
        mean_abs_logit_delta: Mean |logit - reference logit|.
        max_abs_prob_delta: Largest |probability - reference probability|.
        f1_reference: Weighted F1 of the reference (labelled cells only, else None).
        f1_model: Weighted F1 of the engine on the same cells.
        batch_max_delta: Largest logit difference between batch sizes; None if not measured.
    """

    n: int
    agreement: float
    disagreements: int
    max_abs_logit_delta: float
    mean_abs_logit_delta: float
    max_abs_prob_delta: float
    f1_reference: float | None = None
    f1_model: float | None = None
    batch_max_delta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record written into model files and bench JSON (rounded: stable bytes)."""
        d = dataclasses.asdict(self)
        return {k: v if isinstance(v, int) else _sig(v, 6) for k, v in d.items()}

    def line(self) -> str:
        """One line for people."""
        text = (f"max|dlogit| {self.max_abs_logit_delta:.2e}  agreement {self.agreement:.2%} "
                f"({self.n - self.disagreements}/{self.n})")
        if self.batch_max_delta is not None:
            text += f"  batch-size delta {self.batch_max_delta:.1e}"
        if self.f1_model is not None:
            text += f"  weighted F1 {self.f1_reference:.4f} -> {self.f1_model:.4f}"
        return text


def compare(
    ref_logits: np.ndarray, ref_probs: np.ndarray, logits: np.ndarray, probs: np.ndarray, threshold: float,
    labels: np.ndarray | None = None, batch_max_delta: float | None = None,
) -> Parity:
    """Compare an engine's outputs with the reference's on the same cells.

    Args:
        ref_logits: Reference logits [N].
        ref_probs: Reference probabilities [N].
        logits: The engine's logits [N].
        probs: The engine's probabilities [N].
        threshold: Probability at or above which a cell is called ALL.
        labels: True labels (1 = ALL) to compare weighted F1; None when unknown.
        batch_max_delta: The engine's largest logit difference between batch sizes, if measured.

    Raises:
        ValueError: The arrays differ in length or are empty.
    """
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (ref_logits, ref_probs, logits, probs)]
    if len({a.size for a in arrays}) != 1 or arrays[0].size == 0:
        raise ValueError(f"cannot compare outputs of sizes {[a.size for a in arrays]}")
    rl, rp, lg, pr = arrays
    same = (rp >= threshold) == (pr >= threshold)
    delta = np.abs(lg - rl)
    f1_ref = f1 = None
    if labels is not None:
        f1_ref = float(binary_metrics(np.asarray(labels), rp, threshold)["f1"])
        f1 = float(binary_metrics(np.asarray(labels), pr, threshold)["f1"])
    return Parity(
        n=int(rl.size), agreement=float(same.mean()), disagreements=int((~same).sum()),
        max_abs_logit_delta=float(delta.max()), mean_abs_logit_delta=float(delta.mean()),
        max_abs_prob_delta=float(np.max(np.abs(pr - rp))), f1_reference=f1_ref, f1_model=f1,
        batch_max_delta=batch_max_delta,
    )


def breaches(limits: Thresholds, parity: Parity) -> list[str]:
    """Why ``parity`` breaks ``limits``; empty when it passes."""
    out = []
    # Compare counts, not rounded fractions: 100% must mean no disagreement at all.
    allowed = int(np.floor((1.0 - limits.min_agreement) * parity.n + 1e-9))
    if parity.disagreements > allowed:
        out.append(f"label agreement {parity.agreement:.2%} ({parity.disagreements}/{parity.n} labels "
                   f"differ) < {limits.min_agreement:.1%}")
    limit = limits.max_abs_logit_delta
    if limit is not None and parity.max_abs_logit_delta > limit:
        out.append(f"max|dlogit| {parity.max_abs_logit_delta:.3g} > {limit:g}")
    if limit is not None and parity.batch_max_delta is not None and parity.batch_max_delta > limit:
        out.append(f"batch sizes disagree: max|dlogit| between them {parity.batch_max_delta:.3g} > {limit:g}")
    if limits.max_f1_drop is not None and parity.f1_model is not None and parity.f1_reference is not None:
        drop = parity.f1_reference - parity.f1_model
        if drop > limits.max_f1_drop + 1e-12:
            out.append(f"weighted-F1 drop {drop * 100:.2f} point > {limits.max_f1_drop * 100:g}")
    return out


def _profile_file(name: str) -> dict[str, Any] | None:
    try:
        path = resolve_named(name, "profiles")
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (ConfigError, OSError, tomllib.TOMLDecodeError):
        return None


def _profiles(export: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The profile recorded in an export record, then its file by name, then the default profile file."""
    recorded = export.get("profile")
    if isinstance(recorded, Mapping):
        yield dict(recorded)
        recorded = recorded.get("name")
    for name in (recorded, DEFAULT_EXPORT_PROFILE):
        table = _profile_file(name) if isinstance(name, str) else None
        if table is not None:
            yield table


def recorded_thresholds(export: Mapping[str, Any], compute: str | None = None) -> Thresholds:
    """The thresholds gating a model file, from the export profile its record names.

    Args:
        export: The file's ``edgeleuk.export`` record.
        compute: A compute precision below the stored one (``bf16``); its ``[compute.*]`` table applies.

    Raises:
        ConfigError: No profile in reach holds thresholds for ``compute``.
    """
    for table in _profiles(export):
        name = str(table.get("name", "profile"))
        if compute is None:
            return Thresholds.from_table(name, table)
        override = (table.get("compute") or {}).get(compute)
        if override is not None:
            return Thresholds.from_table(f"{name} computed in {compute}", override)
    raise ConfigError(f"no export profile holds thresholds for computing in {compute} "
                      f"(add a [compute.{compute}] table to the profile)")
