"""``edgeleuk info``: what a model file or checkpoint says about itself, as text for people or JSON.

Exported ``.onnx``/``.xml`` files are read torch-free through
:mod:`edgeleuk.io.modelfile`; a checkpoint ``.pt`` is the only case that
imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Calibration, ModelMeta
from edgeleuk.core.text import printable
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
    if meta.um_per_px is not None:
        lines.append(f"scale:         {meta.um_per_px:g} um per pixel (the training cells')")
    else:
        lines.append("scale:         not stated (cutting cells from fields needs --model-um-per-px)")
    if meta.stain_reference is not None:
        lines.append(f"stain:         Reinhard reference from {meta.stain_reference.cells} training cells")
    optional = {"recipe": meta.recipe, "seed": meta.seed, "data": meta.data_fingerprint}
    lines += [f"{k + ':':<15}{v}" for k, v in optional.items() if v is not None]
    calibration = Calibration.from_meta(meta)
    if calibration is not None:
        lines.append(f"calibration:   {calibration.summary()}")
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


def _is_checkpoint(path: Path, checkpoint: bool | None) -> bool:
    """Whether ``path`` is described as a checkpoint: as asked, else by its suffix."""
    is_ckpt = path.suffix.lower() in CHECKPOINT_SUFFIXES if checkpoint is None else checkpoint
    if is_ckpt and not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    return is_ckpt


def _load_checkpoint(path: Path) -> Any:
    # Lazy: only a checkpoint needs torch; `edgeleuk info -m model.onnx` must work on a torch-free install.
    from edgeleuk.modeling.checkpoint import load_checkpoint

    return load_checkpoint(path)


def _printable_lines(lines: list[str]) -> str:
    """The lines as one text; a model's strings (``arch``, ``recipe``...) cannot break or colour them."""
    return "\n".join(printable(line) for line in lines)


def describe_model_file(path: Path, *, checkpoint: bool | None = None) -> str:
    """A multi-line description of an exported model or checkpoint (``edgeleuk info``).

    Args:
        path: Exported ``.onnx``/``.xml``, or a checkpoint.
        checkpoint: Describe ``path`` as a checkpoint (True) or an exported model (False);
            None decides by the suffix (:data:`CHECKPOINT_SUFFIXES`).
    """
    path = Path(path)
    if _is_checkpoint(path, checkpoint):
        ckpt = _load_checkpoint(path)
        head = [f"{path}: edgeleuk checkpoint (PyTorch), {len(ckpt.state_dict)} tensors"]
        return _printable_lines(head + format_meta(ckpt.meta))
    meta, export = read_model_meta(path)
    fmt = format_of(path)
    head = [f"{path}: {fmt.label} model, {fmt.size_bytes(path) / 1e6:.1f} MB"]
    return _printable_lines(head + format_meta(meta) + _format_export(export))


def model_file_record(path: Path, *, checkpoint: bool | None = None) -> dict[str, Any]:
    """What ``edgeleuk info --json`` prints: the same facts as :func:`describe_model_file`, for programs.

    Keys: ``path``, ``kind`` (``model`` or ``checkpoint``), ``format`` (a model format's name,
    e.g. ``onnx``/``openvino``, or ``pytorch``), ``format_label``, ``size_bytes``, ``meta``
    (:meth:`ModelMeta.to_dict`) and ``export`` (the export record; None for a checkpoint,
    which carries ``tensors`` instead).
    """
    path = Path(path)
    if _is_checkpoint(path, checkpoint):
        ckpt = _load_checkpoint(path)
        return {
            "path": str(path), "kind": "checkpoint", "format": "pytorch", "format_label": "PyTorch checkpoint",
            "size_bytes": path.stat().st_size, "tensors": len(ckpt.state_dict), "meta": ckpt.meta.to_dict(),
            "export": None,
        }
    meta, export = read_model_meta(path)
    fmt = format_of(path)
    return {
        "path": str(path), "kind": "model", "format": fmt.name, "format_label": fmt.label,
        "size_bytes": fmt.size_bytes(path), "meta": meta.to_dict(), "export": export,
    }
