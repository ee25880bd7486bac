"""Which type a nested field of a flow parameter expects, for validation error messages.

Pydantic locates an error by a path (`cfg.inner.count`, `xs.a.1`); the message names the type
declared at the end of that path (`int`), not the parameter's top-level type (`Config`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

_NONE = type(None)


def expected_type_at(annotation: Any, path: Sequence[Any]) -> Any:
    """The type declared at `path` inside `annotation`; None when it cannot be told."""
    for part in path:
        annotation = _strip(annotation)
        members = _union_members(annotation)
        if members is not None:
            chosen = next((m for m in members if isinstance(part, str) and part == _tag(m)), None)
            if chosen is not None:
                annotation = chosen  # pydantic names the union member it tried
                continue
            present = [m for m in members if m is not _NONE]
            if len(present) != 1:
                return None
            annotation = _strip(present[0])
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    return _strip(annotation)


def type_name(annotation: Any) -> str:
    """How a type reads in a message: `int`, `Window | None`, `list[Window]` (no module paths)."""
    if annotation is Ellipsis:
        return "..."
    members = _union_members(annotation)
    if members is not None:
        return " | ".join("None" if member is _NONE else type_name(member) for member in members)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and not args:
        return annotation.__name__
    if isinstance(origin, type) and args:
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in args)}]"
    return str(annotation).replace("typing.", "")


def _step(annotation: Any, part: Any) -> Any:
    fields = getattr(annotation, "model_fields", None)
    if isinstance(fields, Mapping) and isinstance(part, str):
        field = fields.get(part)
        return field.annotation if field is not None else None
    if dataclasses.is_dataclass(annotation) and isinstance(part, str):
        hints = typing.get_type_hints(annotation)
        return hints.get(part)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, set, frozenset) or (origin is not None and origin.__name__ in ("Sequence", "Iterable")):
        return args[0] if args else Any
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        return args[part] if isinstance(part, int) and part < len(args) else None
    if origin is dict or (origin is not None and origin.__name__ == "Mapping"):
        return args[1] if len(args) == 2 else Any
    return None


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _tag(member: Any) -> str:
    return type_name(member) if isinstance(member, type) else str(member)
