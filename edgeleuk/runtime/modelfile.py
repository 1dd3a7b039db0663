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

from edgeleuk.contract import EXPORT_KEY, META_KEY
from edgeleuk.errors import CheckpointError, UsageError
from edgeleuk.meta import ModelMeta
from edgeleuk.runtime.openvino import ir_metadata
from edgeleuk.runtime.registry import kind_of, model_kind

CHECKPOINT_SUFFIXES = (".pt", ".pth")
__all__ = ["EXPORT_KEY", "META_KEY", "describe_model_file", "format_meta", "ir_metadata", "model_kind",
           "parse_metadata", "read_model_meta", "read_raw_metadata", "set_ir_metadata", "set_onnx_metadata"]


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


def read_raw_metadata(path: Path) -> dict[str, str]:
    """The raw ``edgeleuk.*`` strings stored in an ``.onnx`` or ``.xml`` file."""
    kind = kind_of(path)
    try:
        return kind.read_metadata(Path(path))
    except UsageError:
        raise
    except Exception as exc:  # a truncated or foreign file: say which file and why
        raise UsageError(f"{path}: cannot read model file: {exc}") from exc


def parse_metadata(raw: Mapping[str, str], source: Path | str) -> tuple[ModelMeta, dict[str, Any]]:
    """Turn the raw strings into ``(ModelMeta, export info)``.

    Raises:
        UsageError: The file carries no ``edgeleuk.meta`` (not exported by edgeleuk) or it is malformed.
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
    kind = kind_of(path)
    size_mb = sum(f.stat().st_size for f in kind.files(path)) / 1e6
    head = [f"{path}: {kind.label} model, {size_mb:.1f} MB"]
    return "\n".join(head + format_meta(meta) + _format_export(export))
