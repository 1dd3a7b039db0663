"""Model repositories for Triton Inference Server and OpenVINO Model Server (OVMS).

Shops that already run one of these servers get the exported model in the layout the server
expects, with the decision threshold and class names beside it, instead of ``edgeleuk serve``:

* Triton (ONNX Runtime backend): ``triton/<name>/config.pbtxt`` + ``triton/<name>/1/model.onnx``.
  The graph's outputs are one scalar per image (``[N]``); Triton cannot declare an empty
  per-item shape when ``max_batch_size > 0``, so each output is exposed as ``[1]`` and
  reshaped to ``[]`` for the model (Triton's documented ``reshape``).
* OVMS: ``ovms/<name>/1/model.xml|bin`` + ``ovms/config.json`` (``base_path`` relative to the
  config file, which OVMS resolves itself).

Torch-free: the metadata comes from the model file. Neither server runs in this repository's
tests; the Triton config is checked against Triton's own ``ModelConfig`` protobuf schema.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeleuk.contract import CHANNELS, INPUT_NAME, OUTPUT_NAMES
from edgeleuk.errors import UsageError
from edgeleuk.meta import ModelMeta
from edgeleuk.runtime.modelfile import model_kind, read_model_meta
from edgeleuk.runtime.wire import model_sha256

VERSION = "1"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class RepoOptions:
    """How the repositories serve the model.

    Attributes:
        name: Model name inside both repositories (the name clients ask for).
        max_batch: Triton's ``max_batch_size``: the most images one engine call takes.
        queue_delay_us: Triton's dynamic batcher: how long a request may wait for others.
        instances: Model instances per device in Triton's ``instance_group``.
        gpu: Run the Triton instances on GPUs (default: CPU, or GPU for an fp16 export).
        tensorrt: Add ONNX Runtime's TensorRT accelerator (GPU only; FP16 for an fp16 export).
    """

    name: str = "edgeleuk"
    max_batch: int = 8
    queue_delay_us: int = 2000
    instances: int = 1
    gpu: bool | None = None
    tensorrt: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(f"model name {self.name!r}: use letters, digits, '_', '-' and '.' only")
        if self.max_batch < 1 or self.instances < 1 or self.queue_delay_us < 0:
            raise UsageError("max batch and instances must be >= 1, queue delay >= 0")


@dataclass(frozen=True)
class RepoResult:
    """What was written: the repository roots (None where no model of that kind was given)."""

    out: Path
    triton: Path | None
    ovms: Path | None

    def describe(self) -> str:
        lines = [f"wrote {self.out}"]
        if self.triton:
            lines.append(f"  Triton:  {self.triton} (tritonserver --model-repository {self.triton})")
        if self.ovms:
            lines.append(f"  OVMS:    {self.ovms} (ovms --config_path {self.ovms / 'config.json'})")
        lines.append("  neither server was started here; the Triton config follows Triton's ModelConfig schema")
        return "\n".join(lines)


def _q(text: str) -> str:
    """A protobuf text-format string literal."""
    return json.dumps(text)


def _parameters(meta: ModelMeta, export: dict[str, Any], digest: str) -> dict[str, str]:
    """What a Triton client needs besides the tensors: the threshold, classes and provenance."""
    return {
        "edgeleuk.threshold": repr(float(meta.threshold)),
        "edgeleuk.threshold_source": meta.threshold_source,
        "edgeleuk.class_names": json.dumps({str(k): v for k, v in meta.class_names.items()}, sort_keys=True),
        "edgeleuk.precision": str(export.get("precision", "unknown")),
        "edgeleuk.sha256": digest,
        "edgeleuk.meta": meta.to_json(),
    }


def triton_config(meta: ModelMeta, export: dict[str, Any], digest: str, options: RepoOptions) -> str:
    """``config.pbtxt`` text for the ONNX Runtime backend (protobuf text format of ``ModelConfig``)."""
    size = meta.preprocess.input_size
    fp16 = export.get("precision") == "fp16"
    gpu = fp16 if options.gpu is None else options.gpu
    if options.tensorrt and not gpu:
        raise UsageError("the TensorRT accelerator runs on GPUs only; add --gpu (or drop --tensorrt)")
    lines = [
        f"name: {_q(options.name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {options.max_batch}",
        f"input [ {{ name: {_q(INPUT_NAME)} data_type: TYPE_UINT8 dims: [ {size}, {size}, {CHANNELS} ] }} ]",
        "output [",
        ",\n".join(
            f"  {{ name: {_q(name)} data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}"
            for name in OUTPUT_NAMES
        ),
        "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us} }}",
        f"instance_group [ {{ kind: {'KIND_GPU' if gpu else 'KIND_CPU'} count: {options.instances} }} ]",
    ]
    if options.tensorrt:
        mode = "FP16" if fp16 else "FP32"
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator: [ "
            f'{{ name: "tensorrt" parameters {{ key: "precision_mode" value: "{mode}" }} }} ] }} }}'
        )
    for key, value in _parameters(meta, export, digest).items():
        lines.append(f"parameters {{ key: {_q(key)} value: {{ string_value: {_q(value)} }} }}")
    return "\n".join(lines) + "\n"


def ovms_config(name: str) -> str:
    """OVMS ``config.json``: one model, its versions under ``<name>/``, the latency hint."""
    config = {"model_config_list": [{"config": {
        "name": name, "base_path": name, "plugin_config": {"PERFORMANCE_HINT": "LATENCY"},
    }}]}
    return json.dumps(config, indent=2) + "\n"


def _check_model(path: Path | None, kind: str, flag: str) -> tuple[ModelMeta, dict[str, Any]] | None:
    if path is None:
        return None
    if model_kind(path) != kind:
        want = "an exported .onnx" if kind == "onnx" else "an OpenVINO IR .xml (the INT8 export)"
        raise UsageError(f"{flag} {path}: expected {want}")
    return read_model_meta(path)


def _write_triton(root: Path, onnx: Path, options: RepoOptions) -> Path:
    meta, export = read_model_meta(onnx)
    folder = root / "triton" / options.name
    (folder / VERSION).mkdir(parents=True)
    shutil.copyfile(onnx, folder / VERSION / "model.onnx")
    config = triton_config(meta, export, model_sha256(onnx), options)
    (folder / "config.pbtxt").write_text(config, encoding="utf-8")
    return root / "triton"


def _write_ovms(root: Path, xml: Path, name: str) -> Path:
    folder = root / "ovms" / name / VERSION
    folder.mkdir(parents=True)
    shutil.copyfile(xml, folder / "model.xml")
    shutil.copyfile(xml.with_suffix(".bin"), folder / "model.bin")
    (root / "ovms" / "config.json").write_text(ovms_config(name), encoding="utf-8")
    return root / "ovms"


def write_serving_repos(
    out: Path, onnx: Path | None = None, ir: Path | None = None, options: RepoOptions | None = None
) -> RepoResult:
    """Write the Triton repository (from ``onnx``) and/or the OVMS repository (from ``ir``).

    The whole folder appears at once (built beside ``out``, then renamed), so a failed run
    leaves nothing half-written.

    Args:
        out: New folder; it must not exist yet (or be empty).
        onnx: An exported ``.onnx`` for Triton's ONNX Runtime backend.
        ir: An exported OpenVINO IR ``.xml`` (with its ``.bin``) for OVMS.
        options: Name, batching, instances, GPU and TensorRT choices.

    Raises:
        UsageError: Neither model given, a model of the wrong kind or without edgeleuk
            metadata, or ``out`` already holds files.
    """
    options = options or RepoOptions()
    if onnx is None and ir is None:
        raise UsageError("give --onnx (for Triton) and/or --ir (for OpenVINO Model Server)")
    _check_model(onnx, "onnx", "--onnx")
    _check_model(ir, "ir", "--ir")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's folder is owner-only; servers often run as another user
    try:
        triton = _write_triton(staging, Path(onnx), options) if onnx else None
        ovms = _write_ovms(staging, Path(ir), options.name) if ir else None
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RepoResult(
        out=out, triton=out / "triton" if triton else None, ovms=out / "ovms" if ovms else None
    )
