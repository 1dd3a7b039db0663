"""Read (and rewrite) the metadata an exported model file carries, without torch.

An exported ONNX graph stores two JSON strings in ``metadata_props`` and an
OpenVINO IR stores the same two in ``rt_info``:

* ``edgeleuk.meta``: :meth:`ModelMeta.to_json` (preprocessing contract, threshold, classes);
* ``edgeleuk.export``: how the file was made (profile, precision, opset, parity gate report).

``edgeleuk info`` also accepts a checkpoint ``.pt``; only then is torch imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeleuk.errors import CheckpointError, UsageError
from edgeleuk.meta import ModelMeta

META_KEY = "edgeleuk.meta"
EXPORT_KEY = "edgeleuk.export"
MODEL_KINDS = {".onnx": "onnx", ".xml": "ir"}
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def model_kind(path: Path) -> str:
    """Check that ``path`` is an existing model file and say which kind.

    Returns:
        ``"onnx"`` or ``"ir"`` (OpenVINO IR ``.xml`` with its ``.bin`` beside it).

    Raises:
        UsageError: The file is missing or its suffix is neither ``.onnx`` nor ``.xml``.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"model file not found: {path} (export one with `edgeleuk export CKPT --out model.onnx`)"
        )
    kind = MODEL_KINDS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: unsupported model file; expected an exported .onnx or OpenVINO IR .xml")
    if kind == "ir" and not path.with_suffix(".bin").is_file():
        raise UsageError(f"{path}: OpenVINO IR weights {path.with_suffix('.bin').name} are missing beside it")
    return kind


def ir_metadata(model: Any) -> dict[str, str]:
    """Both metadata strings from an ``openvino.Model``'s rt_info.

    The exporter writes them under ``["edgeleuk", "meta"|"export"]``; OpenVINO's
    ONNX reader puts an ONNX file's ``metadata_props`` under ``["framework", key]``.
    """
    found: dict[str, str] = {}
    for key in (META_KEY, EXPORT_KEY):
        for rt_path in (key.split("."), ["framework", key]):
            if model.has_rt_info(rt_path):
                found[key] = model.get_rt_info(rt_path).astype(str)
                break
    return found


def set_onnx_metadata(proto: Any, strings: Mapping[str, str]) -> None:
    """Replace entries of an ``onnx.ModelProto``'s ``metadata_props``, keeping the others in order."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in strings]
    del proto.metadata_props[:]
    for key, value in [*keep, *sorted(strings.items())]:  # sorted: repeated exports give the same bytes
        proto.metadata_props.add(key=key, value=value)


def set_ir_metadata(model: Any, strings: Mapping[str, str]) -> None:
    """Store ``edgeleuk.*`` strings in an ``openvino.Model``'s rt_info.

    ``edgeleuk.meta`` goes under ``["edgeleuk", "meta"]``, ``edgeleuk.export`` under ``["edgeleuk", "export"]``.

    A model read from an ``.onnx`` file also holds the ONNX copy under
    ``["framework", key]``; it is overwritten too, so no stale value survives.
    """
    for key, value in strings.items():
        model.set_rt_info(value, key.split("."))
        if model.has_rt_info(["framework", key]):
            model.set_rt_info(value, ["framework", key])


def _onnx_metadata(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        # Parses the protobuf only; no graph optimisation, unlike creating a session.
        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise UsageError("reading .onnx metadata needs onnxruntime: pip install 'edgeleuk[cpu]'") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def _ir_file_metadata(path: Path) -> dict[str, str]:
    import openvino as ov

    return ir_metadata(ov.Core().read_model(str(path)))


def read_raw_metadata(path: Path) -> dict[str, str]:
    """The raw ``edgeleuk.*`` strings stored in an ``.onnx`` or ``.xml`` file."""
    path = Path(path)
    kind = model_kind(path)
    try:
        return _onnx_metadata(path) if kind == "onnx" else _ir_file_metadata(path)
    except UsageError:
        raise
    except Exception as exc:  # a truncated or foreign file: say which file and why
        raise UsageError(f"{path}: cannot read model file: {exc}") from exc


def parse_metadata(raw: Mapping[str, str], source: Path | str) -> tuple[ModelMeta, dict[str, Any]]:
    """Turn the raw strings into ``(ModelMeta, export info)``.

    Raises:
        UsageError: The file carries no ``edgeleuk.meta`` (not exported by edgeleuk), or either
            record is malformed: not JSON objects, or values :class:`ModelMeta` refuses (class
            names, input size, threshold...).
    """
    if META_KEY not in raw:
        raise UsageError(
            f"{source}: no '{META_KEY}' metadata; this model was not exported by edgeleuk, "
            "so its preprocessing contract and threshold are unknown (export it with `edgeleuk export`)"
        )
    try:
        meta = ModelMeta.from_json(raw[META_KEY])
        export = json.loads(raw[EXPORT_KEY]) if raw.get(EXPORT_KEY) else {}
    except (ValueError, TypeError, CheckpointError) as exc:
        raise UsageError(f"{source}: malformed edgeleuk metadata: {exc}") from exc
    if not isinstance(export, dict):
        raise UsageError(
            f"{source}: malformed edgeleuk metadata: the '{EXPORT_KEY}' record must be a JSON object, "
            f"got {type(export).__name__}"
        )
    return meta, export


def read_model_meta(path: Path) -> tuple[ModelMeta, dict[str, Any]]:
    """``(ModelMeta, export info)`` of an exported ``.onnx`` or ``.xml`` model, torch-free."""
    return parse_metadata(read_raw_metadata(path), path)


def format_meta(meta: ModelMeta) -> list[str]:
    """Human-readable lines describing a :class:`ModelMeta`."""
    pre = meta.preprocess
    lines = [
        f"arch:          {meta.arch}",
        f"input:         uint8 RGB [N, {pre.input_size}, {pre.input_size}, 3]",
        (
            f"preprocess:    centre crop {pre.crop}, scale {pre.scale:.6g}, "
            f"mean {list(pre.mean)}, std {list(pre.std)}"
        ),
        f"rotations:     {pre.rotations} ({', '.join(f'{a:g}' for a in pre.angles)} degrees)",
        f"threshold:     {meta.threshold:.6g} ({meta.threshold_source})",
        f"classes:       {', '.join(f'{k}={v}' for k, v in sorted(meta.class_names.items()))}",
    ]
    optional = {"recipe": meta.recipe, "seed": meta.seed, "data": meta.data_fingerprint}
    lines += [f"{k + ':':<15}{v}" for k, v in optional.items() if v is not None]
    if meta.val_metrics:
        lines.append(f"val metrics:   {json.dumps(meta.val_metrics, sort_keys=True)}")
    if meta.extra:
        lines.append(f"extra:         {json.dumps(meta.extra, sort_keys=True)}")
    return lines


def _format_export(export: dict[str, Any]) -> list[str]:
    if not export:
        return ["export:        (no export record)"]
    lines = ["export:"]
    for key in sorted(export):
        value = export[key]
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"  {key}: {text}")
    return lines


def _describe_checkpoint(path: Path) -> str:
    from edgeleuk.checkpoint import load_checkpoint  # torch only for checkpoints

    ckpt = load_checkpoint(path)
    head = [f"{path}: edgeleuk checkpoint (PyTorch), {len(ckpt.state_dict)} tensors"]
    return "\n".join(head + format_meta(ckpt.meta))


def describe_model_file(path: Path) -> str:
    """A multi-line description of an exported model or checkpoint (``edgeleuk info``)."""
    path = Path(path)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise UsageError(f"checkpoint not found: {path}")
        return _describe_checkpoint(path)
    meta, export = read_model_meta(path)
    size_mb = path.stat().st_size / 1e6
    if model_kind(path) == "ir":
        size_mb += path.with_suffix(".bin").stat().st_size / 1e6
        kind = "OpenVINO IR"
    else:
        kind = "ONNX"
    head = [f"{path}: {kind} model, {size_mb:.1f} MB"]
    return "\n".join(head + format_meta(meta) + _format_export(export))
