"""What an exported file says about itself: the two ``edgeleuk.*`` JSON strings.

ONNX files carry them in ``metadata_props``, OpenVINO IR in ``rt_info`` under
``["edgeleuk", "meta"]`` and ``["edgeleuk", "export"]``; :mod:`edgeleuk.modelwrite`
stores them and the runtime's :mod:`edgeleuk.runtime.modelfile` reads them back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from edgeleuk import __version__
from edgeleuk.checkpoint import Checkpoint
from edgeleuk.contract import EXPORT_KEY, META_KEY, contract_record
from edgeleuk.errors import ConfigError
from edgeleuk.exporting.profile import ExportProfile
from edgeleuk.files import sha256_file


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
    }


def metadata_strings(ckpt: Checkpoint, info: dict[str, Any]) -> dict[str, str]:
    """Both keys as the JSON strings stored in the file (sorted keys: stable bytes)."""
    return {META_KEY: ckpt.meta.to_json(), EXPORT_KEY: json.dumps(info, sort_keys=True)}
