"""Model repositories for Triton Inference Server and OpenVINO Model Server (OVMS).

Shops that already run one of these servers get the exported model in the layout the server
expects, with the decision threshold and class names beside it, instead of ``edgeleuk serve``:

* Triton (ONNX Runtime backend): ``triton/<name>/config.pbtxt`` + ``triton/<name>/1/model.onnx``.
  The graph's outputs are one scalar per image (``[N]``); Triton cannot declare an empty
  per-item shape when ``max_batch_size > 0``, so each output is exposed as ``[1]`` and
  reshaped to ``[]`` for the model (Triton's documented ``reshape``).
* OVMS: ``ovms/<name>/1/model.xml|bin`` + ``ovms/config.json`` (``base_path`` relative to the
  config file, which OVMS resolves itself).

Which repository takes which model is the format table's word (``ModelFormat.repository`` in
:mod:`edgeleuk.io.formats`): each model file given goes to its format's repository.

Torch-free: the metadata comes from the model file. Neither server runs in this repository's
tests; the Triton config is checked against Triton's own ``ModelConfig`` protobuf schema.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeleuk.core.contract import CHANNELS, INPUT_NAME, OUTPUT_NAMES
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.io.atomic import current_umask, fsync_dir, fsync_file
from edgeleuk.io.formats import FORMATS, ModelFormat, format_of
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime.wire import model_sha256

VERSION = "1"
# A folder name in both repositories: no separators, and never "." or ".." (nor hidden).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


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
            raise UsageError(f"model name {self.name!r}: use letters, digits, '_', '-' and '.' only, "
                             "starting with a letter, digit or '_' (at most 128)")
        if self.max_batch < 1 or self.instances < 1 or self.queue_delay_us < 0:
            raise UsageError("max batch and instances must be >= 1, queue delay >= 0")


@dataclass(frozen=True)
class RepoResult:
    """What was written: repository name (``triton``, ``ovms``) -> its root folder."""

    out: Path
    repos: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"wrote {self.out}"]
        for name, root in self.repos.items():
            lines.append(f"  {REPOSITORIES[name].label + ':':<8} {root} ({REPOSITORIES[name].start(root)})")
        lines.append("  no server was started here; the Triton config follows Triton's ModelConfig schema")
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


#: Where Triton's TensorRT accelerator keeps its engines, per model name (a path on the server).
TRITON_TRT_CACHE = "/tmp/edgeleuk-tensorrt"


def _tensorrt_parameters(size: int, fp16: bool, options: RepoOptions) -> dict[str, str]:
    """The TensorRT accelerator's parameters, each mapped to a TensorRT provider option by Triton's backend.

    Precision, an engine cache so that a restart does not rebuild the engine, and one shape
    profile for batches 1 to ``max_batch`` so that a new batch size does not rebuild it either.
    """

    def shape(batch: int) -> str:
        return f"{INPUT_NAME}:{batch}x{size}x{size}x{CHANNELS}"

    return {
        "precision_mode": "FP16" if fp16 else "FP32",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"{TRITON_TRT_CACHE}/{options.name}",
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(options.max_batch),
        "trt_profile_max_shapes": shape(options.max_batch),
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
        params = " ".join(f"parameters {{ key: {_q(k)} value: {_q(v)} }}"
                          for k, v in _tensorrt_parameters(size, fp16, options).items())
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator: [ "
            f'{{ name: "tensorrt" {params} }} ] }} }}'
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


def _copy_model(fmt: ModelFormat, src: Path, folder: Path) -> None:
    """Copy the model at ``src`` into ``folder`` as ``model<suffix>`` (companions and folders too)."""
    for path, name in zip(fmt.files(src), fmt.files(folder / f"model{fmt.suffix}"), strict=True):
        if path.is_dir():
            shutil.copytree(path, name)
        else:
            shutil.copyfile(path, name)


def _write_triton(root: Path, fmt: ModelFormat, model: Path, options: RepoOptions) -> None:
    meta, export = read_model_meta(model)
    if options.gpu and "gpu" not in fmt.devices:
        raise UsageError(f"{model}: {fmt.label} models do not run on GPUs; drop --gpu")
    folder = root / "triton" / options.name
    (folder / VERSION).mkdir(parents=True)
    _copy_model(fmt, model, folder / VERSION)
    config = triton_config(meta, export, model_sha256(model), options)
    (folder / "config.pbtxt").write_text(config, encoding="utf-8")


def _write_ovms(root: Path, fmt: ModelFormat, model: Path, options: RepoOptions) -> None:
    folder = root / "ovms" / options.name / VERSION
    folder.mkdir(parents=True)
    _copy_model(fmt, model, folder)
    (root / "ovms" / "config.json").write_text(ovms_config(options.name), encoding="utf-8")


@dataclass(frozen=True)
class Repository:
    """A serving repository kind ``serving-repo`` can write.

    Attributes:
        label: Name for people.
        write: ``(staging root, format, model, options)``: writes the repository under the root.
        start: The command that starts the server on the written repository root.
    """

    label: str
    write: Callable[[Path, ModelFormat, Path, RepoOptions], None]
    start: Callable[[Path], str]


# Repository name (``ModelFormat.repository``) -> how to write it.
REPOSITORIES: dict[str, Repository] = {
    "triton": Repository("Triton", _write_triton, lambda root: f"tritonserver --model-repository {root}"),
    "ovms": Repository("OVMS", _write_ovms, lambda root: f"ovms --config_path {root / 'config.json'}"),
}


def served_formats() -> dict[str, str]:
    """Format name -> the repository that takes it, for every format that has one."""
    return {name: fmt.repository for name, fmt in FORMATS.items() if fmt.repository in REPOSITORIES}


def _sort_models(models: Sequence[Path]) -> dict[str, tuple[ModelFormat, Path]]:
    """Repository name -> the one model (and its format) that goes there."""
    chosen: dict[str, tuple[ModelFormat, Path]] = {}
    for model in models:
        fmt = format_of(model)
        repo = served_formats().get(fmt.name)
        if repo is None:
            raise UsageError(f"{model}: no serving repository takes {fmt.label} models; "
                             f"serving-repo writes {', '.join(f'{n} ({r})' for n, r in served_formats().items())}")
        if repo in chosen:
            raise UsageError(f"{model}: {chosen[repo][1]} already goes to the {repo} repository; give one model each")
        read_model_meta(model)  # an edgeleuk export, with its threshold and classes
        chosen[repo] = (fmt, Path(model))
    return chosen


def write_serving_repos(out: Path, models: Sequence[Path], options: RepoOptions | None = None) -> RepoResult:
    """Write one serving repository per model: each goes to its format's repository.

    An ``.onnx`` goes to Triton (ONNX Runtime backend), an OpenVINO IR ``.xml`` (with its ``.bin``)
    to OpenVINO Model Server; see :func:`served_formats`. The whole folder appears at once (built
    beside ``out``, then renamed), so a failed run leaves nothing half-written.

    Args:
        out: New folder; it must not exist yet (or be empty).
        models: Exported model files, at most one per repository.
        options: Name, batching, instances, GPU and TensorRT choices.

    Raises:
        UsageError: No model given, a format no repository takes, two models for one repository,
            a model without edgeleuk metadata, or ``out`` already holds files.
    """
    options = options or RepoOptions()
    if not models:
        raise UsageError("give at least one --model: " + ", ".join(
            f"{FORMATS[f].label} {FORMATS[f].suffix} for {REPOSITORIES[r].label}" for f, r in served_formats().items()))
    chosen = _sort_models(models)
    out = Path(out)
    if out.is_symlink():
        raise UsageError(f"{out} is a link; give the path of a new folder (repositories are not written through links)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for repo, (fmt, model) in chosen.items():
            REPOSITORIES[repo].write(staging, fmt, model, options)
        _settle(staging)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RepoResult(out=out, repos={repo: out / repo for repo in chosen})


def _settle(root: Path) -> None:
    """Give ``root`` the umask's mode and make everything under it durable.

    ``mkdtemp``'s folder is owner-only, but servers often run as another user: it gets what
    ``mkdir`` would give, set explicitly (the umask is read, never changed). Files are flushed
    before their folders, and all before the rename that makes the repository appear.
    """
    os.chmod(root, 0o777 & ~current_umask())
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(folder)
