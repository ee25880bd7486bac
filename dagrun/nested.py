"""The one walk over nested call arguments that finds the handles in them (the engine's
futures, the thread executor's handles), and how a dataclass or pydantic model holding some
travels to the worker.

What is walked is what Prefect's `visit_collection` walks: lists, tuples, sets, dicts, at any
depth, and the fields of dataclass instances and pydantic models. A dataclass or model whose
fields hold futures is rebuilt with the values in their place, as Prefect rebuilds it: a
dataclass through its constructor (its `__post_init__` runs again), a model with
`model_construct` (no validation; its fields set and private attributes kept).

Executors resolve handles only in lists, tuples, sets and dicts (Dask does, on the worker), so
such a dataclass travels as a `(REBUILD, class, fields, extra)` tuple (`travelling`) and is
rebuilt just before the task function is called (`arrived`). Plain values cost one set lookup.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_SEQUENCES = (list, tuple, set, frozenset)
_PLAIN = frozenset({int, float, complex, str, bytes, bool, type(None)})


class WalkedList(list):
    """A list subclass the walks enter as a plain list: the futures list `task.map` returns
    (`dagrun.futures.FutureList`) derives from it; other subclasses of list are values."""


class _Rebuild:
    """The first item of the tuple a dataclass or model holding handles travels as. Not a
    callable (Dask reads a tuple headed by one as a task); pickled by reference, so `is`
    holds on the worker too."""

    def __reduce__(self) -> str:
        return "REBUILD"

    def __repr__(self) -> str:
        return "REBUILD"


REBUILD = _Rebuild()


def fields_of(value: Any) -> dict[str, Any] | None:
    """The fields of a dataclass instance or pydantic model, by name; None for anything else."""
    kind = type(value)
    if kind in _PLAIN:
        return None
    if hasattr(kind, "__dataclass_fields__") and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    pydantic = sys.modules.get("pydantic")  # never imported for it: a model means it is loaded
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        names = list(kind.model_fields) + [name for name in value.model_fields_set if name not in kind.model_fields]
        return {name: getattr(value, name) for name in names}
    return None


def with_fields(value: Any, fields: dict[str, Any]) -> Any:
    """A copy of the dataclass or model `value` with `fields` in place of its own."""
    return _rebuilt(type(value), fields, _extra(value))


def travelling(value: Any, fields: dict[str, Any]) -> tuple:
    """`value` with `fields` as an executor passes it on (see the module docstring)."""
    return (REBUILD, type(value), fields, _extra(value))


def arrived(value: Any) -> Any:
    """`value` (call arguments whose handles the executor replaced by values) with the
    dataclasses and models that travelled as tuples rebuilt."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is tuple:
        if value and value[0] is REBUILD:
            _, cls, fields, extra = value
            return _rebuilt(cls, {name: arrived(item) for name, item in fields.items()}, extra)
        return _arrived_items(value)
    if kind is list:
        return _arrived_items(value)
    if kind is dict:
        items = {key: arrived(item) for key, item in value.items()}
        return items if any(items[key] is not item for key, item in value.items()) else value
    return value


def _arrived_items(value: list | tuple) -> Any:
    items = [arrived(item) for item in value]
    if all(new is old for new, old in zip(items, value)):
        return value
    return type(value)(items)


def _extra(value: Any) -> Any:
    """What a model keeps besides its fields (None for a dataclass)."""
    if hasattr(type(value), "__dataclass_fields__"):
        return None
    return (set(value.model_fields_set), dict(value.__pydantic_private__ or {}))


def _rebuilt(cls: type, fields: dict[str, Any], extra: Any) -> Any:
    if extra is None:  # a dataclass: through its constructor, as Prefect does
        init = {field.name for field in dataclasses.fields(cls) if field.init}
        return cls(**{name: item for name, item in fields.items() if name in init})
    fields_set, private = extra
    model = cls.model_construct(_fields_set=fields_set, **fields)
    for name, item in private.items():
        setattr(model, name, item)
    return model


def instances_in(value: Any, kind: type[T], found: list[T], _seen: set[int] | None = None) -> None:
    """Append every `kind` instance inside `value` to `found`, in walking order (exact type
    checks: a subclass of list or dict is a value, not a container to walk). A dataclass or
    model met again (a cycle: a node's parent) is not walked again, as in Prefect."""
    value_type = type(value)
    if value_type is kind:
        found.append(value)
    elif value_type in _PLAIN:
        return
    elif value_type in _SEQUENCES or isinstance(value, WalkedList):
        for item in value:
            instances_in(item, kind, found, _seen)
    elif value_type is dict:
        for item in value.values():
            instances_in(item, kind, found, _seen)
    else:
        fields = fields_of(value)
        if fields:
            _seen = set() if _seen is None else _seen
            if id(value) not in _seen:
                _seen.add(id(value))
                for item in fields.values():
                    instances_in(item, kind, found, _seen)


def holds(value: Any, kind: type) -> bool:
    """Whether a `kind` instance is somewhere inside `value`."""
    found: list = []
    instances_in(value, kind, found)
    return bool(found)


def replaced(value: Any, kind: type[T], replace: Callable[[T], Any], _seen: set[int] | None = None) -> Any:
    """`value` with every `kind` instance inside it replaced by `replace(instance)`; containers
    holding none are returned as they are (a `WalkedList` becomes a plain list); a dataclass or
    model met again (a cycle) is left as it is."""
    value_type = type(value)
    if value_type is kind:
        return replace(value)
    if value_type in _PLAIN:
        return value
    if value_type in _SEQUENCES or isinstance(value, WalkedList):
        items = [replaced(item, kind, replace, _seen) for item in value]
        if value_type in _SEQUENCES and all(new is old for new, old in zip(items, value)):
            return value
        return items if isinstance(value, WalkedList) else value_type(items)
    if value_type is dict:
        items = {key: replaced(item, kind, replace, _seen) for key, item in value.items()}
        return items if any(items[key] is not item for key, item in value.items()) else value
    fields = fields_of(value)
    if fields:
        _seen = set() if _seen is None else _seen
        if id(value) in _seen:
            return value
        _seen.add(id(value))
        new = {name: replaced(item, kind, replace, _seen) for name, item in fields.items()}
        if any(new[name] is not item for name, item in fields.items()):
            return with_fields(value, new)
    return value
