"""The model-file formats: one table, from which every other part of edgeleuk derives what it needs.

Each :class:`ModelFormat` declares what a file of that format is (its suffix, one file or a
folder, the companion files beside it), how its ``edgeleuk.*`` metadata is read and written,
which devices can run it and which serving repository takes it. Backends name the formats they
read (``Backend.reads``), export profiles name the format they write, ``serving-repo`` sends
each model to its format's repository, and ``info``/``calibrate`` read and rewrite metadata
through the table; none of them lists formats again.

Adding a format: write its reader and writer, then one :func:`register_format` call (at the end
of this module for a built-in format, or in a plugin module). Engines are imported inside the
readers and writers: importing this module loads no engine.

Torch-free.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeleuk.core.contract import EXPORT_KEY, META_KEY
from edgeleuk.core.errors import BackendUnavailable, UsageError
from edgeleuk.io.files import sha256_file

Device = Literal["cpu", "gpu"]
DEVICES: tuple[str, ...] = ("cpu", "gpu")


@dataclass(frozen=True)
class ModelFormat:
    """A model file format: what it is, how its metadata is read and written, what runs it.

    Attributes:
        name: Key used in export profiles (``format = "onnx"``), model records and messages.
        suffix: Suffix of the path users name (``.onnx``, ``.xml``; a folder format's folder suffix).
        label: Name for people (``ONNX``, ``OpenVINO IR``).
        read_metadata: Reads the raw ``edgeleuk.*`` strings of such a model without compiling it.
        write_metadata: ``(src, dest, strings)``: writes a copy of the model ``src`` to ``dest``
            (a path of the same format, not yet existing) with ``strings`` set in its metadata.
        companions: Suffixes of files that must sit beside it under the same stem (an IR's
            ``.bin`` weights); written before the main file, which commits.
        layout: ``file`` (one file, plus companions) or ``folder`` (a directory the engine opens).
        devices: Devices that can run the format (``cpu``, ``gpu``); a backend reads only formats
            that run on its device.
        repository: The serving repository (``serving-repo``) that takes this format; None: none.
    """

    name: str
    suffix: str
    label: str
    read_metadata: Callable[[Path], dict[str, str]] = field(compare=False, repr=False)
    write_metadata: Callable[[Path, Path, Mapping[str, str]], None] = field(compare=False, repr=False)
    companions: tuple[str, ...] = ()
    layout: Literal["file", "folder"] = "file"
    devices: tuple[str, ...] = ("cpu",)
    repository: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.suffix.startswith("."):
            raise ValueError(f"model format {self.name!r}: a name must be an identifier, a suffix start with '.'")
        if self.layout not in ("file", "folder") or self.layout == "folder" and self.companions:
            raise ValueError(f"model format {self.name}: layout must be 'file' or 'folder' (no companions)")
        if not self.devices or set(self.devices) - set(DEVICES):
            raise ValueError(f"model format {self.name}: devices must be among {DEVICES}")

    def files(self, path: Path) -> tuple[Path, ...]:
        """Every path of the model at ``path``: companions first, the main path last."""
        path = Path(path)
        return (*(path.with_suffix(s) for s in self.companions), path)

    def size_bytes(self, path: Path) -> int:
        """Bytes the model at ``path`` takes, companions and a folder's files included."""
        total = 0
        for item in self.files(path):
            paths = [p for p in item.rglob("*") if p.is_file()] if item.is_dir() else [item]
            total += sum(p.stat().st_size for p in paths)
        return total

    def sha256(self, path: Path) -> str:
        """The model's identity: its full SHA-256, whose first digits name it in answers and rows.

        One file: that file's SHA-256. A file with companions (an IR's ``.xml`` and ``.bin``): the
        SHA-256 of the main file's hex digest followed by each companion's. A folder: the SHA-256 of
        each of its files' relative path and SHA-256, in name order.
        """
        path = Path(path)
        if self.layout == "folder":
            files = sorted(p for p in path.rglob("*") if p.is_file())
            lines = "".join(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n" for p in files)
            return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()
        if not self.companions:
            return sha256_file(path)
        digests = [sha256_file(p) for p in (path, *self.files(path)[:-1])]
        return hashlib.sha256("".join(digests).encode("ascii")).hexdigest()

    def check(self, path: Path) -> None:
        """Raise a UsageError when ``path`` is not an existing model of this format with its companions."""
        path = Path(path)
        exists = path.is_dir() if self.layout == "folder" else path.is_file()
        if not exists:
            what = "folder" if self.layout == "folder" else "file"
            raise UsageError(f"model {what} not found: {path} "
                             "(export one with `edgeleuk export --checkpoint CKPT --out model.onnx`)")
        for other in self.files(path)[:-1]:
            if not other.is_file():
                raise UsageError(f"{path}: {self.label} weights {other.name} are missing beside it")


# Format name -> format, in registration order.
FORMATS: dict[str, ModelFormat] = {}


def register_format(fmt: ModelFormat) -> ModelFormat:
    """Add a format; its name and suffix must be new.

    Raises:
        ValueError: A name or suffix another format already has.
    """
    if fmt.name in FORMATS or any(f.suffix == fmt.suffix.lower() for f in FORMATS.values()):
        raise ValueError(f"model format {fmt.name!r} ({fmt.suffix}): name or suffix already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def format_named(name: str) -> ModelFormat:
    """The format called ``name``.

    Raises:
        UsageError: No such format.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown model format {name!r}; known: {', '.join(FORMATS)}") from None


def format_for_suffix(suffix: str) -> ModelFormat:
    """The format whose paths end in ``suffix`` (for writers naming paths not yet written).

    Raises:
        UsageError: No registered format has that suffix.
    """
    for fmt in FORMATS.values():
        if fmt.suffix == suffix.lower():
            return fmt
    known = ", ".join(f"{f.label} {f.suffix}" for f in FORMATS.values())
    raise UsageError(f"no model format is written as {suffix!r}; known: {known}")


def format_of(path: Path | str) -> ModelFormat:
    """Check that ``path`` is an existing model of a known format and return that format.

    Raises:
        UsageError: The path is missing, its suffix names no format, or a companion is missing.
    """
    path = Path(path)
    for fmt in FORMATS.values():
        if path.suffix.lower() == fmt.suffix:
            fmt.check(path)
            return fmt
    if not path.exists():
        raise UsageError(f"model file not found: {path} "
                         "(export one with `edgeleuk export --checkpoint CKPT --out model.onnx`)")
    known = " or ".join(f"{f.label} {f.suffix}" for f in FORMATS.values())
    raise UsageError(f"{path}: unsupported model file; expected an exported {known}")


def model_sha256(path: Path | str) -> str:
    """The full SHA-256 that identifies the model at ``path`` (:meth:`ModelFormat.sha256`).

    Raises:
        UsageError: ``path`` is not an existing model of a known format.
    """
    return format_of(path).sha256(Path(path))


# ---- ONNX ----------------------------------------------------------------------------------

def set_onnx_metadata(proto: Any, strings: Mapping[str, str]) -> None:
    """Replace entries of an ``onnx.ModelProto``'s ``metadata_props``, keeping the others in order."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in strings]
    del proto.metadata_props[:]
    for key, value in [*keep, *sorted(strings.items())]:  # sorted: repeated exports give the same bytes
        proto.metadata_props.add(key=key, value=value)


def _import_onnx(why: str) -> Any:
    try:
        import onnx  # lazy: an optional extra (cpu/gpu/train)
    except ImportError as exc:
        raise UsageError(f"{why} needs the onnx package: pip install 'edgeleuk[cpu]' "
                         "(it comes with 'edgeleuk[gpu]' and 'edgeleuk[train]' too)") from exc
    return onnx


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ``.onnx`` file, with ``onnx`` if installed, else ONNX Runtime."""
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


def write_onnx_metadata(src: Path, dest: Path, strings: Mapping[str, str]) -> None:
    """Write a copy of the ``.onnx`` file ``src`` to ``dest`` with ``strings`` in its ``metadata_props``."""
    onnx = _import_onnx("writing metadata into an ONNX model")
    proto = onnx.load(str(src))  # with external data, so the copy is self-contained
    set_onnx_metadata(proto, strings)
    onnx.save(proto, str(dest))


# ---- OpenVINO IR ---------------------------------------------------------------------------

def import_openvino() -> Any:
    """Import ``openvino`` or say how to install it."""
    try:
        import openvino  # lazy: seconds to import; only where a model is read or compiled with it
    except ImportError as exc:
        raise BackendUnavailable("openvino is not installed: pip install openvino") from exc
    return openvino


@functools.cache
def shared_core() -> Any:
    """The process's one ``openvino.Core``, used for every model edgeleuk reads or compiles.

    Never released on purpose: each Core that compiles on a thread gives it an alternate signal
    stack and unmaps that stack when released, and Cores released in the order they were made
    leave the thread on an unmapped one, after which Ctrl-C ends the process with SIGSEGV
    (:mod:`edgeleuk.runtime.altstack`). ``ov.Core`` is thread-safe.
    """
    return import_openvino().Core()


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


def set_ir_metadata(model: Any, strings: Mapping[str, str]) -> None:
    """Store ``edgeleuk.*`` strings in an ``openvino.Model``'s rt_info.

    ``edgeleuk.meta`` goes under ``["edgeleuk", "meta"]``, ``edgeleuk.export`` under ``["edgeleuk", "export"]``.
    A model read from an ``.onnx`` file also holds the ONNX copy under ``["framework", key]``;
    it is overwritten too, so no stale value survives.
    """
    for key, value in strings.items():
        model.set_rt_info(value, key.split("."))
        if model.has_rt_info(["framework", key]):
            model.set_rt_info(value, ["framework", key])


def read_ir_metadata(path: Path) -> dict[str, str]:
    """The ``edgeleuk.*`` strings of an IR ``.xml`` (read, not compiled)."""
    return ir_metadata(shared_core().read_model(str(path)))


def write_ir_metadata(src: Path, dest: Path, strings: Mapping[str, str]) -> None:
    """Write a copy of the IR ``src`` (``.xml`` + ``.bin``) to ``dest`` with ``strings`` in its rt_info."""
    ov = import_openvino()
    model = shared_core().read_model(str(src))
    set_ir_metadata(model, strings)
    ov.save_model(model, str(dest), compress_to_fp16=False)  # an fp32 model stays fp32


# ---- the built-in formats ------------------------------------------------------------------

ONNX = register_format(ModelFormat(
    "onnx", ".onnx", "ONNX", read_metadata=read_onnx_metadata, write_metadata=write_onnx_metadata,
    devices=("cpu", "gpu"), repository="triton",
))
OPENVINO = register_format(ModelFormat(
    "openvino", ".xml", "OpenVINO IR", read_metadata=read_ir_metadata, write_metadata=write_ir_metadata,
    companions=(".bin",), devices=("cpu", "gpu"), repository="ovms",
))
