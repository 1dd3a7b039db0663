"""Load TOML files into frozen dataclasses; unknown or mistyped keys are errors."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from edgeleuk.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
# The export profile used when none is named (by ``export``, and by ``bench`` for unrecorded files).
DEFAULT_EXPORT_PROFILE = "export/cpu-fp32.toml"


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


def load_toml(cls: type[T], path: str | Path) -> T:
    """Read a TOML file into ``cls``.

    Raises:
        ConfigError: The file is missing, is not valid TOML, or does not fit ``cls``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return from_mapping(cls, data, where=path.name)


def resolve_named(name_or_path: str | Path, folder: str, repo_root: Path | None = None) -> Path:
    """Accept ``paper`` or ``train/paper.toml``: bare names resolve in the repo's folder.

    Raises:
        ConfigError: Neither a file nor a name in ``folder``; the message lists the names there.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    root = repo_root or Path(__file__).resolve().parent.parent
    for cand in (root / folder / p.name, root / folder / f"{p.name}.toml"):
        if cand.is_file():
            return cand
    known = sorted(c.stem for c in (root / folder).glob("*.toml"))
    raise ConfigError(
        f"no such file: {name_or_path} (also looked in {root / folder}; names there: "
        f"{', '.join(known) or 'none'})"
    )
