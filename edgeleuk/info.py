"""``edgeleuk info``: what a model file or checkpoint says about itself, as text for people.

Exported ``.onnx``/``.xml`` files are read torch-free through
:mod:`edgeleuk.io.modelfile`; a checkpoint ``.pt`` is the only case that
imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.io.formats import format_of
from edgeleuk.io.modelfile import read_model_meta

#: Suffixes ``info`` treats as PyTorch checkpoints rather than exported models.
CHECKPOINT_SUFFIXES = (".pt", ".pth")


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
    # Lazy: only a checkpoint needs torch; `edgeleuk info model.onnx` must work on a torch-free install.
    from edgeleuk.modeling.checkpoint import load_checkpoint

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
    fmt = format_of(path)
    head = [f"{path}: {fmt.label} model, {fmt.size_bytes(path) / 1e6:.1f} MB"]
    return "\n".join(head + format_meta(meta) + _format_export(export))
