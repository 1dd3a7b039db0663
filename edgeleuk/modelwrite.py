"""Write exported model files, torch-free: the ``edgeleuk.*`` metadata and all-or-nothing replacement.

``export`` (a new graph) and ``calibrate`` (a copy with a new threshold) both
end here, so a model file is written one way only.

Metadata: ONNX files carry the two JSON strings in ``metadata_props``, an
OpenVINO IR in ``rt_info`` under ``["edgeleuk", "meta"]`` and
``["edgeleuk", "export"]``; :mod:`edgeleuk.runtime.modelfile` reads them back.

Replacement: files are built in a private folder beside the destination, then
moved in. An ONNX file is one ``os.replace``. An OpenVINO IR is two files, and
readers open the ``.xml``, which names its weights only by the shared stem: an
old ``.xml`` beside a new ``.bin`` of the same architecture would load silently
with the old metadata (threshold, gate report). So the ``.xml`` is the commit point:

1. the old ``.xml`` and then the old ``.bin`` are moved into the staging folder,
2. the new ``.bin`` is moved in, then the new ``.xml``.

Whenever ``model.xml`` exists, the ``model.bin`` beside it is its own. An error
on the way moves the old pair back. If the process dies between steps 1 and 2,
``model.xml`` is missing (readers fail loudly; rerun the command) and both pairs
stay in the hidden staging folder ``.model.xml.*/`` (the old one under
``previous/``). What remains: a reader that read the old ``.xml`` just before
the swap and opens the ``.bin`` just after it sees the new weights; OpenVINO
reads both in one call, so that window is the few milliseconds of the swap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edgeleuk.contract import META_KEY
from edgeleuk.errors import UsageError
from edgeleuk.meta import ModelMeta
from edgeleuk.runtime.modelfile import model_kind, read_model_meta
from edgeleuk.runtime.registry import kind_for_suffix


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


def output_files(dest: Path) -> tuple[Path, ...]:
    """The files a model written to ``dest`` consists of: its kind's companions (an IR's ``.bin``), then it."""
    return kind_for_suffix(dest.suffix).files(dest)


def _fsync(path: Path) -> None:
    # Durable data before the renames that publish it; directories only where POSIX allows it.
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_pair(stage: Path, xml: Path) -> None:
    """Move ``stage/<xml name>`` and its ``.bin`` over ``xml`` and its ``.bin`` (see module docstring)."""
    weights, _ = output_files(xml)
    previous = stage / "previous"
    previous.mkdir()
    hidden: list[Path] = []
    placed_weights = False
    try:
        for final in (xml, weights):  # .xml first: from now on no reader can pair anything
            if final.exists():
                os.replace(final, previous / final.name)
                hidden.append(final)
        os.replace(stage / weights.name, weights)
        placed_weights = True
        os.replace(stage / xml.name, xml)  # the commit point
    except BaseException:
        if placed_weights:
            weights.unlink(missing_ok=True)
        for final in reversed(hidden):  # .bin back before .xml
            os.replace(previous / final.name, final)
        raise


@contextlib.contextmanager
def staged(dest: Path) -> Iterator[Path]:
    """Yield a temporary folder on ``dest``'s file system; files named like ``dest`` in it replace it on success.

    On an exception nothing at ``dest`` changes and the folder is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield stage
        for final in output_files(dest):
            _fsync(stage / final.name)
        if len(output_files(dest)) == 2:  # a main file and its weights: the main file commits
            swap_pair(stage, dest)
        else:
            os.replace(stage / dest.name, dest)
        _fsync(dest.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_model_with_meta(src: Path, out: Path, meta: ModelMeta) -> Path:
    """Write a copy of the exported model ``src`` to ``out`` carrying ``meta``.

    The graph and weights are copied unchanged; only the ``edgeleuk.meta`` string
    differs. ONNX files are rewritten with the ``onnx`` package, OpenVINO IR with
    ``openvino`` (``compress_to_fp16=False`` so an fp32 model stays fp32); both
    go through :func:`staged`.

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
        import onnx  # lazy: an optional extra, needed only to rewrite .onnx files
    except ImportError as exc:
        raise UsageError(
            "writing the threshold into an ONNX model needs the onnx package: "
            "pip install onnx (it comes with 'edgeleuk[cpu]', 'edgeleuk[gpu]' and 'edgeleuk[train]')"
        ) from exc
    proto = onnx.load(str(src))  # with external data, so the copy is self-contained
    set_onnx_metadata(proto, {META_KEY: meta_json})
    with staged(out) as stage:
        onnx.save(proto, str(stage / out.name))


def _write_ir(src: Path, out: Path, meta_json: str) -> None:
    import openvino as ov  # lazy: seconds to import, needed only to rewrite an IR

    model = ov.Core().read_model(str(src))
    set_ir_metadata(model, {META_KEY: meta_json})
    with staged(out) as stage:
        ov.save_model(model, str(stage / out.name), compress_to_fp16=False)
