"""JSON encoding of the frozen domain dataclasses, driven by their type hints.

Rules: enums are stored by name (so reordering values never corrupts a store), tuples as lists,
NewTypes as their base type. ``decode(cls, encode(x)) == x`` for every domain value; unknown keys
in stored data are ignored and missing ones take the field default, so adding a field with a
default never breaks an existing store.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    return value


def decode(cls: type[T], data: Any) -> T:
    result: T = _decode(cls, data)
    return result


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, data: Any) -> Any:
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:  # NewType
        return _decode(supertype, data)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        if data is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(inner, data)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], d) for d in data)
        return tuple(_decode(a, d) for a, d in zip(args, data, strict=True))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: _decode(hints[k], v) for k, v in data.items() if k in names})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp[data]
    if tp is float:
        return float(data)
    return data
