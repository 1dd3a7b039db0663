"""The rows of a benchmark: backend x variant x model file, derived from the backend registry.

Every registered backend that reads a file's kind gives a row; a backend may
declare further variants (:meth:`~edgeleuk.runtime.base.Backend.bench_variants`),
e.g. OpenVINO computing an fp32 file in bf16. Which precision a file holds is read
from its metadata (``edgeleuk.export`` JSON, key ``precision``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import UsageError
from edgeleuk.evaluation.parity import normalise_precision
from edgeleuk.io.formats import format_of
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime.registry import BACKENDS
from edgeleuk.runtime.staged import META_EXTRA_KEY


@dataclass(frozen=True)
class ModelFile:
    """An exported model file and what its metadata says.

    Attributes:
        path: The ``.onnx`` or ``.xml``.
        kind: ``onnx`` or ``ir``.
        precision: ``fp32``, ``fp16`` or ``int8`` as exported.
        size_bytes: On-disk size (an IR's ``.xml`` plus ``.bin``).
        source_sha256: Checkpoint the file was exported from, if recorded.
        threshold: Decision threshold stored in the file.
        export: The file's export record (its profile gives the parity thresholds).
        stage: The staged-TTA stage choice the file carries (``meta.extra``), or None.
    """

    path: Path
    kind: str
    precision: str
    size_bytes: int
    source_sha256: str | None
    threshold: float
    export: dict[str, Any] = field(default_factory=dict, repr=False)
    stage: dict[str, Any] | None = field(default=None, repr=False)


def read_model_file(path: Path) -> ModelFile:
    """Describe a model file from its metadata (torch-free).

    Raises:
        UsageError: Missing file, wrong suffix or no edgeleuk metadata.
    """
    path = Path(path)
    fmt = format_of(path)
    meta, export = read_model_meta(path)
    return ModelFile(
        path=path, kind=fmt.name, size_bytes=fmt.size_bytes(path),
        precision=normalise_precision(export.get("precision")),
        source_sha256=export.get("source_sha256"), threshold=meta.threshold, export=export,
        stage=meta.extra.get(META_EXTRA_KEY),
    )


@dataclass(frozen=True)
class Case:
    """One row to measure.

    Attributes:
        backend: ``torch`` or a registered backend.
        model: Model file (None for the torch row, which runs the checkpoint).
        precision: What is gated: the file's precision, or the compute precision of a
            variant (``bf16`` for OpenVINO computing an fp32 file in bf16).
        options: Fields of the backend's own options record for this row.
        tag: Row name after the backend for a variant (``int8+bf16``); None: the precision.
        skip: Why the row cannot run here, known before trying; None if it can.
        tta: ``full`` or ``staged`` rotation TTA.
    """

    backend: str
    model: Path | None
    precision: str
    options: dict[str, Any] = field(default_factory=dict)
    tag: str | None = None
    skip: str | None = None
    tta: str = "full"

    @property
    def label(self) -> str:
        """Short row name, e.g. ``cpu fp32``, ``openvino bf16`` or ``openvino int8+bf16``."""
        if self.backend == "torch":
            return "torch eager fp32"
        label = f"{self.backend} {self.tag or self.precision}"
        return f"{label} staged" if self.tta == "staged" else label

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = None if self.model is None else str(self.model)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        d = dict(d)
        d["model"] = None if d.get("model") is None else Path(d["model"])
        return cls(**d)


def rows_for_file(mf: ModelFile, features: dict[str, bool]) -> list[Case]:
    """Every row a model file can give, before filtering by ``--backend``.

    Args:
        mf: The model file.
        features: Machine features variants may need (``bf16``: the CPU computes bf16 natively).
    """
    rows = []
    for name, cls in BACKENDS.items():
        if mf.kind not in cls.reads:
            continue
        rows.append(Case(name, mf.path, mf.precision))
        for v in cls.bench_variants(mf.precision):
            skip = None if v.needs is None or features.get(v.needs) else v.why_not
            rows.append(Case(name, mf.path, v.gate_precision or mf.precision, dict(v.options), v.tag, skip))
    return rows


def plan_cases(
    files: list[ModelFile], backend: str, has_checkpoint: bool, bf16_cpu: bool,
    availability: dict[str, str | None], tta: str = "full",
) -> list[Case]:
    """The rows to measure, the torch reference first.

    Args:
        files: Main model file first, then the extra ones.
        backend: ``all`` or one backend name.
        has_checkpoint: Whether a checkpoint was given for the torch row.
        bf16_cpu: Whether the CPU computes bf16 natively.
        availability: Backend name -> None if it runs here, else why not.
        tta: ``staged``: the rows of files that carry a stage choice run staged TTA.

    Returns:
        Rows in report order; rows that cannot run carry ``skip``.

    Raises:
        UsageError: ``staged`` but no file carries a stage choice.
    """
    if tta == "staged" and not any(mf.stage for mf in files):
        raise UsageError("--tta staged: none of the model files carries a calibrated stage choice; choose one "
                         "with `edgeleuk calibrate -m MODEL --data LABELLED --out MODEL2` and bench MODEL2")
    torch_skip = availability.get("torch") if has_checkpoint else (
        "no --checkpoint: pass the checkpoint the model was exported from to measure the PyTorch "
        "original and check parity")
    cases = [Case("torch", None, "fp32", skip=torch_skip)]
    for mf in files:
        for case in rows_for_file(mf, {"bf16": bf16_cpu}):
            if backend not in ("all", case.backend):
                continue
            if backend == "all" and BACKENDS[case.backend].auto_rank is None:
                continue  # a backend that runs only when named (remote) is measured only when named
            reason = availability.get(case.backend)
            if tta == "staged" and mf.stage:
                case = replace(case, tta="staged")
            cases.append(case if reason is None or case.skip else replace(case, skip=reason))
    return cases
