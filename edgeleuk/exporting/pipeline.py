"""``export_model``: checkpoint -> gated model file (ONNX, or OpenVINO IR for INT8).

Steps: decode the gate (and INT8 quantization) cells once, run the PyTorch
reference on the gate cells once (shared by INT8 accuracy control and every gate
engine), build the graph (preprocessing and TTA inside), write it to a private
temporary folder beside the destination, check its structure, run the parity gate
on the file as written, then store metadata (with the gate report) and move into
place. A gate breach raises :class:`~edgeleuk.core.errors.GateFailed` and leaves
no file.

What the file says about itself: two JSON strings, ``edgeleuk.meta`` (the
checkpoint's :class:`~edgeleuk.core.meta.ModelMeta`) and ``edgeleuk.export`` (:func:`export_info`:
provenance, contract, profile, how INT8 was made, the gate's verdict);
:mod:`edgeleuk.io.modelwrite` stores them and :mod:`edgeleuk.io.modelfile` reads them back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgeleuk import __version__
from edgeleuk.core.config import DEFAULT_EXPORT_OUT
from edgeleuk.core.contract import EXPORT_KEY, META_KEY, contract_record
from edgeleuk.core.errors import ConfigError, GateFailed, UsageError
from edgeleuk.core.versions import library_versions
from edgeleuk.exporting.gate import GateReport, ReferenceOutputs, reference_outputs, run_gate
from edgeleuk.exporting.graph import check_onnx_file, export_onnx
from edgeleuk.exporting.imagesets import ImageSet, gate_and_quant_sets
from edgeleuk.exporting.int8 import describe_quantization, quantize_onnx, save_ir
from edgeleuk.exporting.profile import DEFAULT_PROFILE, ExportProfile, load_profile
from edgeleuk.io.files import sha256_file
from edgeleuk.io.formats import import_openvino, set_ir_metadata, set_onnx_metadata
from edgeleuk.io.modelwrite import output_files, replace_atomically
from edgeleuk.modeling.checkpoint import Checkpoint, load_checkpoint
from edgeleuk.modeling.reference import TorchReference

log = logging.getLogger(__name__)
DEFAULT_OUT = DEFAULT_EXPORT_OUT


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        path: The model file (``.onnx`` or ``.xml``).
        files: Every file written (an IR adds its ``.bin``).
        profile: The profile used.
        gate: The parity gate's report (also stored in the file).
        seconds: Wall time of the whole export.
        exported_at: Timestamp stored in the file.
        quantization: How the INT8 model was made (NNCF method, accuracy control), or None.
    """

    path: Path
    files: tuple[Path, ...]
    profile: ExportProfile
    gate: GateReport
    seconds: float
    exported_at: str
    quantization: dict[str, Any] | None = None

    @property
    def size_bytes(self) -> int:
        return self.profile.model_format.size_bytes(self.path)

    def describe(self) -> str:
        p = self.profile
        kind = f"{p.model_format.label} opset {p.opset}" if p.format == "onnx" else p.model_format.label
        lines = [
            (f"wrote {self.path} ({p.name}: {p.precision} {kind}, {self.size_bytes / 1e6:.1f} MB) "
             f"in {self.seconds:.1f} s"),
        ]
        if self.quantization is not None:
            lines.append(describe_quantization(self.quantization))
        lines.append(self.gate.describe())
        if "SYNTHETIC" in self.gate.data:
            lines.append("note: the gate ran on SYNTHETIC cells; its F1 says nothing "
                         "about real cells")
        return "\n".join(lines)


def export_time(profile: ExportProfile) -> str:
    """The export timestamp (UTC, ISO 8601) recorded in the file.

    ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) or the profile's
    ``source_date_epoch`` pin it, making repeated exports byte-identical; otherwise
    it is the current time, the only field that then differs between exports.
    """
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is not None:
        try:
            seconds = int(raw)
        except ValueError:
            raise ConfigError(f"SOURCE_DATE_EPOCH must be whole Unix seconds, got {raw!r}") from None
    elif profile.source_date_epoch is not None:
        seconds = profile.source_date_epoch
    else:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()


def input_contract(ckpt: Checkpoint) -> dict[str, Any]:
    """The graph's inputs and outputs, as recorded for people and tools."""
    return contract_record(ckpt.meta.preprocess.input_size)


def export_info(ckpt: Checkpoint, profile: ExportProfile, gate: dict[str, Any] | None,
                exported_at: str, quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``edgeleuk.export`` record: provenance, contract, profile, how INT8 was made, the gate's verdict."""
    meta, pre = ckpt.meta, ckpt.meta.preprocess
    return {
        "edgeleuk_version": __version__,
        "architecture": meta.arch,
        **input_contract(ckpt),
        "crop": pre.crop,
        "rotations": pre.rotations,
        "angles": pre.angles,
        "preprocessing": {"scale": pre.scale, "mean": list(pre.mean), "std": list(pre.std)},
        "threshold": meta.threshold,
        "class_names": {str(k): v for k, v in meta.class_names.items()},
        "source_checkpoint": ckpt.path.name if ckpt.path else None,
        "source_sha256": sha256_file(ckpt.path) if ckpt.path else None,
        "val_metrics": meta.val_metrics,
        "profile": profile.to_dict(),
        "precision": profile.precision,
        "format": profile.format,
        "opset": profile.opset,
        "exported_at": exported_at,
        "quantization": quantization,
        "gate": gate,
        "versions": library_versions(EXPORT_LIBRARIES),
    }


#: Libraries whose versions an export records: what made the file (a model card states them).
EXPORT_LIBRARIES = ("torch", "timm", "onnx", "onnxruntime", "openvino", "nncf")


def metadata_strings(ckpt: Checkpoint, info: dict[str, Any]) -> dict[str, str]:
    """Both keys as the JSON strings stored in the file (sorted keys: stable bytes)."""
    return {META_KEY: ckpt.meta.to_json(), EXPORT_KEY: json.dumps(info, sort_keys=True)}


def output_path(out: str | Path, profile: ExportProfile) -> Path:
    """The main output file; a profile writing another kind turns the default ``x.onnx`` into its suffix.

    Raises:
        UsageError: The suffix fits neither the profile nor the ``.onnx`` default.
    """
    out = Path(out)
    if out.suffix.lower() == profile.suffix:
        return out
    if out.suffix.lower() == Path(DEFAULT_OUT).suffix:
        log.warning("profile %s writes an %s: writing %s", profile.name, profile.model_format.label,
                    out.with_suffix(profile.suffix))
        return out.with_suffix(profile.suffix)
    raise UsageError(f"--out {out}: profile {profile.name!r} writes a {profile.suffix} file; "
                     f"use e.g. --out model{profile.suffix}")


def _gate_or_fail(path: Path, profile: ExportProfile, data: ImageSet, ref: ReferenceOutputs) -> GateReport:
    started = time.perf_counter()
    report = run_gate(path, profile, data, ref)
    log.info("parity gate took %.1f s", time.perf_counter() - started)
    if not report.passed:
        raise GateFailed(f"{report.describe()}\nexport refused: no file was written")
    return report


def _write_onnx(ckpt: Checkpoint, profile: ExportProfile, dest: Path, data: ImageSet, quant: ImageSet | None,
                ref: ReferenceOutputs, exported_at: str) -> tuple[GateReport, dict[str, Any] | None]:
    model = export_onnx(ckpt, profile.opset, half=profile.precision == "fp16")
    onnx.save(model, str(dest))
    check_onnx_file(dest, ckpt.meta, fp16=profile.precision == "fp16")
    report = _gate_or_fail(dest, profile, data, ref)
    # Metadata does not touch the computation: the gated graph is what gets moved into place.
    set_onnx_metadata(model, metadata_strings(ckpt, export_info(ckpt, profile, report.to_dict(), exported_at)))
    onnx.save(model, str(dest))
    return report, None


def _write_ir(ckpt: Checkpoint, profile: ExportProfile, dest: Path, data: ImageSet, quant: ImageSet | None,
              ref: ReferenceOutputs, exported_at: str) -> tuple[GateReport, dict[str, Any] | None]:
    fp32 = dest.with_name("float32.onnx")
    onnx.save(export_onnx(ckpt, profile.opset), str(fp32))
    check_onnx_file(fp32, ckpt.meta)
    record = None
    if profile.precision == "int8":
        model, record = quantize_onnx(fp32, quant, profile, data, ref)
    else:
        model = import_openvino().Core().read_model(str(fp32))  # lazy: an ONNX export needs no OpenVINO
    save_ir(model, dest)
    report = _gate_or_fail(dest, profile, data, ref)
    info = export_info(ckpt, profile, report.to_dict(), exported_at, quantization=record)
    set_ir_metadata(model, metadata_strings(ckpt, info))
    save_ir(model, dest)
    return report, record


# Model format (edgeleuk.io.formats) -> the exporter's writer for it: build, gate, set metadata.
WRITERS = {"onnx": _write_onnx, "openvino": _write_ir}


def export_model(ckpt: str | Path | Checkpoint, out: str | Path = DEFAULT_OUT,
                 profile: str | Path | ExportProfile = DEFAULT_PROFILE, data: str | Path | None = None,
                 *, reference: Any = None) -> ExportResult:
    """Export a checkpoint through the parity gate.

    Args:
        ckpt: Checkpoint path (or a loaded :class:`Checkpoint`).
        out: Output ``.onnx``, or ``.xml`` for an OpenVINO IR profile.
        profile: Profile object, TOML file or a packaged profile name (``cpu-fp32``).
        data: Data root (``export --data``; any layout ``edgeleuk.io.data`` discovers) for the
            gate and INT8 calibration images; None draws a SYNTHETIC set.
        reference: Stand-in for the PyTorch reference (tests); default
            :class:`~edgeleuk.modeling.reference.TorchReference` of ``ckpt``.

    Raises:
        GateFailed: The file breaks its contract or the parity gate; nothing is written.
        ConfigError: Bad profile. CheckpointError: Bad checkpoint. DataError: Bad ``data``.
    """
    started = time.perf_counter()
    prof = load_profile(profile)
    if prof.format not in WRITERS:
        raise ConfigError(f"export profile {prof.name!r}: edgeleuk exports {' and '.join(WRITERS)} models, "
                          f"not {prof.format!r}")
    checkpoint = ckpt if isinstance(ckpt, Checkpoint) else load_checkpoint(ckpt)
    dest = output_path(out, prof)
    exported_at = export_time(prof)
    quant_n = prof.calib_size if prof.precision == "int8" else 0
    gate_set, quant = gate_and_quant_sets(Path(data) if data else None, prof.parity_n, quant_n,
                                          checkpoint.meta.preprocess.input_size)
    if reference is None:
        reference = TorchReference(checkpoint)
    ref = reference_outputs(reference, gate_set)
    record = None
    with replace_atomically(dest) as tmp:
        draft = tmp / dest.name
        report, record = WRITERS[prof.format](checkpoint, prof, draft, gate_set, quant, ref, exported_at)
    return ExportResult(path=dest, files=output_files(dest), profile=prof, gate=report,
                        seconds=time.perf_counter() - started, exported_at=exported_at, quantization=record)
