"""Read the metadata an exported model file carries, without torch.

An exported ONNX graph stores two JSON strings in ``metadata_props`` and an
OpenVINO IR stores the same two in ``rt_info``:

* ``edgeleuk.meta``: :meth:`ModelMeta.to_json` (preprocessing contract, threshold, classes);
* ``edgeleuk.export``: how the file was made (profile, precision, opset, parity gate report).

Which formats exist and how each is read is declared once, in :mod:`edgeleuk.io.formats`.
Writing them is :mod:`edgeleuk.io.modelwrite`'s job; ``edgeleuk info``'s text is
:mod:`edgeleuk.info`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeleuk.core.contract import EXPORT_KEY, META_KEY
from edgeleuk.core.errors import CheckpointError, UsageError
from edgeleuk.core.meta import ModelMeta, parse_json
from edgeleuk.io.formats import format_of


def read_raw_metadata(path: Path) -> dict[str, str]:
    """The raw ``edgeleuk.*`` strings stored in a model file, read as its format declares."""
    fmt = format_of(path)
    try:
        return fmt.read_metadata(Path(path))
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
        export = parse_json(raw[EXPORT_KEY], "the export record") if raw.get(EXPORT_KEY) else {}
    except (ValueError, TypeError, CheckpointError) as exc:
        raise UsageError(f"{source}: malformed edgeleuk metadata: {exc}") from exc
    if not isinstance(export, dict):
        raise UsageError(
            f"{source}: malformed edgeleuk metadata: the '{EXPORT_KEY}' record must be a JSON object, "
            f"got {type(export).__name__}"
        )
    return meta, export


def read_model_meta(path: Path) -> tuple[ModelMeta, dict[str, Any]]:
    """``(ModelMeta, export info)`` of an exported model file, torch-free."""
    return parse_metadata(read_raw_metadata(path), path)
