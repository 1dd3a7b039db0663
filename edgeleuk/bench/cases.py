"""The rows of a benchmark: backend x precision x model file.

Which precision runs is read from the model file's metadata (``edgeleuk.export``
JSON, key ``precision``) and, for OpenVINO, from the inference precision asked of
the CPU plugin: an fp32 ``.onnx`` gives ``openvino f32`` and ``openvino bf16`` rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeleuk.bench.parity import normalise_precision
from edgeleuk.runtime.modelfile import model_kind, read_model_meta

RUNTIME_BACKENDS = ("cpu", "openvino", "cuda")


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
    """

    path: Path
    kind: str
    precision: str
    size_bytes: int
    source_sha256: str | None
    threshold: float


def read_model_file(path: Path) -> ModelFile:
    """Describe a model file from its metadata (torch-free).

    Raises:
        UsageError: Missing file, wrong suffix or no edgeleuk metadata.
    """
    path = Path(path)
    kind = model_kind(path)
    meta, export = read_model_meta(path)
    size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if kind == "ir" else 0)
    return ModelFile(
        path=path, kind=kind, precision=normalise_precision(export.get("precision")), size_bytes=size,
        source_sha256=export.get("source_sha256"), threshold=meta.threshold,
    )


@dataclass(frozen=True)
class Case:
    """One row to measure.

    Attributes:
        backend: ``torch``, ``cpu``, ``openvino`` or ``cuda``.
        model: Model file (None for the torch row, which runs the checkpoint).
        precision: What is gated: the file's precision, or ``bf16`` for OpenVINO bf16.
        ov_precision: OpenVINO CPU inference precision (``f32``/``bf16``); ignored elsewhere.
        skip: Why the row cannot run here, known before trying; None if it can.
    """

    backend: str
    model: Path | None
    precision: str
    ov_precision: str = "f32"
    skip: str | None = None

    @property
    def label(self) -> str:
        """Short row name, e.g. ``openvino bf16``, ``openvino int8`` or ``openvino int8+bf16``."""
        if self.backend == "torch":
            return "torch eager fp32"
        if self.precision == "int8" and self.ov_precision == "bf16":
            return f"{self.backend} int8+bf16"  # int8 layers, bf16 for the layers left unquantized
        return f"{self.backend} {self.precision}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = None if self.model is None else str(self.model)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        d = dict(d)
        d["model"] = None if d.get("model") is None else Path(d["model"])
        return cls(**d)


def rows_for_file(mf: ModelFile, bf16_cpu: bool) -> list[Case]:
    """Every row a model file can give, before filtering by ``--backend``.

    An fp32 file also runs OpenVINO in bf16; an int8 file also runs with bf16 for the
    layers that do not execute in INT8 (the grouped convolutions), both on bf16 CPUs only.
    """
    no_bf16 = None if bf16_cpu else "this CPU has no avx512_bf16/amx_bf16: OpenVINO would not compute in bf16"
    if mf.kind == "ir":
        rows = [Case("openvino", mf.path, mf.precision)]
    else:
        rows = [Case("cpu", mf.path, mf.precision), Case("openvino", mf.path, mf.precision)]
    if mf.precision == "fp32":
        rows.append(Case("openvino", mf.path, "bf16", ov_precision="bf16", skip=no_bf16))
    elif mf.precision == "int8":
        rows.append(Case("openvino", mf.path, "int8", ov_precision="bf16", skip=no_bf16))
    if mf.kind == "onnx":
        rows.append(Case("cuda", mf.path, mf.precision))
    return rows


def plan_cases(
    files: list[ModelFile], backend: str, has_checkpoint: bool, bf16_cpu: bool,
    availability: dict[str, str | None],
) -> list[Case]:
    """The rows to measure, the torch reference first.

    Args:
        files: Main model file first, then the extra ones.
        backend: ``all`` or one backend name.
        has_checkpoint: Whether a checkpoint was given for the torch row.
        bf16_cpu: Whether the CPU computes bf16 natively.
        availability: Backend name -> None if it runs here, else why not.

    Returns:
        Rows in report order; rows that cannot run carry ``skip``.
    """
    torch_skip = availability.get("torch") if has_checkpoint else (
        "no --checkpoint: pass the checkpoint the model was exported from to measure the PyTorch "
        "original and check parity")
    cases = [Case("torch", None, "fp32", skip=torch_skip)]
    for mf in files:
        for case in rows_for_file(mf, bf16_cpu):
            if backend not in ("all", case.backend):
                continue
            reason = availability.get(case.backend)
            cases.append(case if reason is None or case.skip else Case(**{**case.__dict__, "skip": reason}))
    return cases
