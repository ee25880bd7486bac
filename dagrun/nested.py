"""The one walk over nested call arguments (lists, tuples, sets and dicts, at any depth) that
finds the handles in them: the engine's futures, the thread executor's handles."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")

_SEQUENCES = (list, tuple, set, frozenset)


class WalkedList(list):
    """A list subclass the walks enter as a plain list: the futures list `task.map` returns
    (`dagrun.futures.FutureList`) derives from it; other subclasses of list are values."""


def instances_in(value: Any, kind: type[T], found: list[T]) -> None:
    """Append every `kind` instance inside `value` to `found`, in walking order (exact type
    checks: a subclass of list or dict is a value, not a container to walk)."""
    value_type = type(value)
    if value_type is kind:
        found.append(value)
    elif value_type in _SEQUENCES:
        for item in value:
            instances_in(item, kind, found)
    elif value_type is dict:
        for item in value.values():
            instances_in(item, kind, found)
    elif isinstance(value, WalkedList):
        for item in value:
            instances_in(item, kind, found)
