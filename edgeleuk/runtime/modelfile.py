"""Read the metadata an exported model file carries, without torch.

An exported ONNX graph stores two JSON strings in ``metadata_props`` and an
OpenVINO IR stores the same two in ``rt_info``:

* ``edgeleuk.meta``: :meth:`ModelMeta.to_json` (preprocessing contract, threshold, classes);
* ``edgeleuk.export``: how the file was made (profile, precision, opset, parity gate report).

Writing them is :mod:`edgeleuk.modelwrite`'s job; ``edgeleuk info``'s text is
:mod:`edgeleuk.info`'s.
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


def _onnx_metadata(path: Path) -> dict[str, str]:
    try:
        import onnx  # lazy: optional (cpu/gpu extras), and the runtime must start without it
    except ImportError:
        onnx = None
    if onnx is not None:
        # Parses the protobuf only; no graph optimisation, unlike creating a session.
        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    try:
        import onnxruntime as ort  # lazy: engines load only when a file of theirs is read
    except ImportError as exc:
        raise UsageError("reading .onnx metadata needs onnxruntime: pip install 'edgeleuk[cpu]'") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def _ir_file_metadata(path: Path) -> dict[str, str]:
    import openvino as ov  # lazy: seconds to import, only for IR files

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
