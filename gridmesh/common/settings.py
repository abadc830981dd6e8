"""Daemon settings from layered sources: a TOML section, then environment variables, then flags.

One mechanism for the controller and the agent: every key is checked against the settings dataclass
(unknown keys are refused, naming the known ones) and every value against its field's type, so a
mistake is a ``ConfigError`` naming the source and the key, never a traceback or a silent default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ENV_SOURCE = "environment (GRIDMESH_*):"
FLAGS_SOURCE = "command line:"


class ConfigError(Exception):
    """The configuration is wrong: names the source, the key and what is allowed."""


def read_toml(path: Path, allowed_tables: tuple[str, ...]) -> dict[str, Any]:
    """The parsed file; a table other than ``allowed_tables`` (a misspelt section) is an error."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    for key in data:
        if key not in allowed_tables:
            raise ConfigError(f"{path}: [{key}] is not a section; allowed: {', '.join(allowed_tables)}")
    return data


def _coerce(source: str, key: str, value: Any, tp: Any) -> Any:
    """``value`` as the field's type. Environment values arrive as text, so numbers may be text there."""
    optional = type(None) in typing.get_args(tp)
    if optional:
        if value is None:
            return None
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    from_text = isinstance(value, str) and source.startswith(ENV_SOURCE)
    try:
        if tp is Path and isinstance(value, str | Path):
            return Path(value)
        if tp is str and isinstance(value, str):
            return value
        if tp is int and ((isinstance(value, int) and not isinstance(value, bool)) or from_text):
            return int(value)
        if tp is float and ((isinstance(value, int | float) and not isinstance(value, bool)) or from_text):
            return float(value)
    except ValueError:
        pass
    kind = {Path: "a path (string)", str: "a string", int: "an integer", float: "a number"}.get(tp, str(tp))
    raise ConfigError(f"{source} {key} = {value!r} is not {kind}")


def build(cls: type[T], layers: list[tuple[str, Mapping[str, Any]]], exclude: tuple[str, ...] = ()) -> T:
    """The settings from ``layers`` (source, values), later layers overriding earlier ones.

    A source reads as the start of a message: "FILE: [agent]", "environment (GRIDMESH_*):".
    """
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    known = sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude)
    values: dict[str, Any] = {}
    for source, layer in layers:
        for key, value in layer.items():
            if key not in known:
                raise ConfigError(f"{source} {key} is not a setting; known: {', '.join(known)}")
            if value is not None:
                values[key] = _coerce(source, key, value, hints[key])
    return cls(**values)


def from_env(env: Mapping[str, str], keys: list[str], prefix: str = "GRIDMESH_") -> dict[str, str]:
    return {k: env[prefix + k.upper()] for k in keys if env.get(prefix + k.upper())}
