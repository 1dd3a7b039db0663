"""Load TOML files into frozen dataclasses; find the recipes and export profiles shipped with edgeleuk.

Unknown or mistyped keys are errors. Recipes and profiles are package data in
:mod:`edgeleuk.configs`; a user's own TOML file is read the same way.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

from edgeleuk.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
# The export profile used when none is named (by ``export``, and by ``bench`` for unrecorded files).
DEFAULT_EXPORT_PROFILE = "cpu-fp32"
DEFAULT_EXPORT_OUT = "model.onnx"  # where `edgeleuk export` writes unless told (a profile may change the suffix)

#: Packaged config folders (``edgeleuk/configs/<kind>``) and the repository folder the same
#: files were documented under (``--recipe train/paper.toml``, ``--profile export/cpu-fp32.toml``).
CONFIG_KINDS = {"recipes": "train", "profiles": "export"}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_mapping(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    if typing.get_origin(hint) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {args}")
        return value
    return value


def from_mapping(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: A (frozen) dataclass type.
        data: Parsed TOML table.
        where: Prefix for error messages, e.g. the file name.

    Raises:
        ConfigError: Unknown key, wrong type or a missing required key.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_toml(cls: type[T], path: str | Path | Traversable) -> T:
    """Read a TOML file (a path, or a packaged config from :func:`resolve_named`) into ``cls``.

    Raises:
        ConfigError: The file is missing, is not valid TOML, or does not fit ``cls``.
    """
    if isinstance(path, str):
        path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return from_mapping(cls, data, where=path.name)


def _packaged(kind: str) -> Traversable:
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"unknown config kind {kind!r}; choose one of {', '.join(CONFIG_KINDS)}")
    return resources.files("edgeleuk.configs") / kind


def config_names(kind: str) -> list[str]:
    """Names of the packaged ``recipes`` or ``profiles``, sorted (``paper``, ``smoke``, ...)."""
    folder = _packaged(kind)
    if not folder.is_dir():  # an install that lost its package data: say "none", do not crash
        return []
    return sorted(f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml"))


def _packaged_file(kind: str, name: str) -> Traversable:
    found = _packaged(kind) / f"{name.removesuffix('.toml')}.toml"
    if not found.is_file():
        raise ConfigError(
            f"no packaged {kind[:-1]} {name!r}; packaged {kind}: {', '.join(config_names(kind)) or 'none'} "
            f"(`edgeleuk {kind}` lists them, `edgeleuk {kind} NAME` prints one to copy and edit)"
        )
    return found


def resolve_named(name_or_path: str | Path, kind: str) -> Path | Traversable:
    """Find a recipe or export profile given as a file, a packaged name or the documented repository path.

    An existing file (``my.toml``) is read as it is. ``paper``, ``paper.toml`` and
    the repository-style ``train/paper.toml`` (``export/cpu-fp32.toml`` for
    profiles) name the copy shipped inside the package, so they work after any
    install and from any folder. Any other missing path is an error, never a
    silent substitute.

    Args:
        name_or_path: What the user gave.
        kind: ``recipes`` or ``profiles``.

    Raises:
        ConfigError: Neither an existing file nor a packaged name; the message lists the names.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.parent not in (Path("."), Path(CONFIG_KINDS[kind])):
        raise ConfigError(f"no such file: {name_or_path}")
    return _packaged_file(kind, p.name)


def describe_configs(kind: str) -> str:
    """One line per packaged config: its name and its ``description`` (``edgeleuk recipes``/``profiles``)."""
    lines = []
    for name in config_names(kind):
        data = tomllib.loads(_packaged_file(kind, name).read_text(encoding="utf-8"))
        lines.append(f"{name:<24}{data.get('description', '')}".rstrip())
    return "\n".join(lines)


def config_text(kind: str, name: str) -> str:
    """The TOML text of a packaged config, to read or to save as an editable copy.

    Raises:
        ConfigError: No packaged config of that name.
    """
    return _packaged_file(kind, Path(name).name).read_text(encoding="utf-8")
