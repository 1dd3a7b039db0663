"""Copy an exported model with new ``edgeleuk.meta`` metadata, atomically.

The graph and weights are copied unchanged; only the metadata string differs.
ONNX files are rewritten with the ``onnx`` package (``metadata_props``), OpenVINO
IR with ``openvino`` (``rt_info``; ``compress_to_fp16=False`` so an fp32 model
stays fp32). A reader never sees a half-written file: ONNX goes through a
temporary file, IR through a temporary folder whose ``.bin`` is moved into place
before its ``.xml``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgeleuk.atomic import atomic_path, fsync_dir, fsync_file
from edgeleuk.errors import UsageError
from edgeleuk.meta import ModelMeta
from edgeleuk.runtime.modelfile import (
    META_KEY,
    model_kind,
    read_model_meta,
    set_ir_metadata,
    set_onnx_metadata,
)


def write_model_with_meta(src: Path, out: Path, meta: ModelMeta) -> Path:
    """Write a copy of the exported model ``src`` to ``out`` carrying ``meta``.

    Args:
        src: Exported ``.onnx`` or OpenVINO ``.xml`` model.
        out: Destination with the same suffix as ``src`` (may equal ``src``).
        meta: Metadata to store under ``edgeleuk.meta``.

    Returns:
        ``out``.

    Raises:
        UsageError: Suffixes differ, a needed package is missing, or the copy does not read back.
    """
    src, out = Path(src), Path(out)
    kind = model_kind(src)
    if out.suffix.lower() != src.suffix.lower():
        raise UsageError(
            f"--out {out} must have the same suffix as the model ({src.suffix}): a copy is written"
        )
    if kind == "onnx":
        _write_onnx(src, out, meta.to_json())
    else:
        _write_ir(src, out, meta.to_json())
    written, _ = read_model_meta(out)
    if written != meta:
        raise UsageError(f"{out}: metadata did not read back as written; the file was not updated correctly")
    return out


def _write_onnx(src: Path, out: Path, meta_json: str) -> None:
    try:
        import onnx
    except ImportError as exc:
        raise UsageError(
            "writing the threshold into an ONNX model needs the onnx package: "
            "pip install onnx (it comes with 'edgeleuk[cpu]', 'edgeleuk[gpu]' and 'edgeleuk[train]')"
        ) from exc
    proto = onnx.load(str(src))  # with external data, so the copy is self-contained
    set_onnx_metadata(proto, {META_KEY: meta_json})
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))


def _write_ir(src: Path, out: Path, meta_json: str) -> None:
    import openvino as ov

    model = ov.Core().read_model(str(src))
    set_ir_metadata(model, {META_KEY: meta_json})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        tmp_xml = tmp_dir / out.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        for written in (tmp_xml.with_suffix(".bin"), tmp_xml):
            fsync_file(written)
        # The .xml names no .bin: OpenVINO pairs them by stem. Move weights first so
        # the .xml only ever appears next to its finished .bin.
        os.replace(tmp_xml.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(tmp_xml, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
