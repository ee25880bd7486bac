"""A future that stands in for its value: Prefect code, where a direct task call returns the
value, runs unchanged when the call returns a `TaskFuture` instead.

Every way of using an object as a value (truth test, `for`, `len`, `in`, indexing, attribute
access, arithmetic on either side, comparison, `str` / f-strings / `print`, `int` / `float`,
`round`, `numpy.asarray`) waits for the task and applies to its result; a failed task raises
its exception there. What does not wait:

| use                         | gives                                                           |
|-----------------------------|-----------------------------------------------------------------|
| `hash(f)`, `f in a_set`     | identity, so futures are set members and dict keys (as Prefect's) |
| `f is g`, `f == f`          | identity (a future equals itself without waiting)              |
| `f._anything`, `f.__x__`    | the future's own (private and protocol names are never forwarded) |
| `isinstance(f, int)`        | waits, for a direct call in a sync flow body (`__class__` is the |
|                             | value's); else False. C code checking exact types (`json.dumps`) |
|                             | needs `.result()`                                               |

The value is fetched once and kept by the future, so `x[i]` in a loop and `x.append(...)`
act on one object in the driver.
"""

from __future__ import annotations

import operator
from typing import Any

class StandsForValue:
    """Mixin: every value protocol applies to `self._value_now()` (defined by the subclass)."""

    __slots__ = ()

    def _value_now(self) -> Any:  # pragma: no cover - defined by TaskFuture
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the future itself lacks; private and protocol names
        # (`_x`, `__array__`, `__dask_graph__`) are probes by libraries, never forwarded.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._value_now(), name)

    def __format__(self, spec: str) -> str:
        return format(self._value_now(), spec)

    def __fspath__(self) -> Any:
        import os

        return os.fspath(self._value_now())

    def __contains__(self, item: Any) -> bool:
        return _plain(item) in self._value_now()

    def __getitem__(self, key: Any) -> Any:
        return self._value_now()[_plain(key)]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._value_now()[_plain(key)] = value

    def __delitem__(self, key: Any) -> None:
        del self._value_now()[_plain(key)]

    def __eq__(self, other: object) -> bool:
        return True if other is self else self._value_now() == _plain(other)

    def __ne__(self, other: object) -> bool:
        return False if other is self else self._value_now() != _plain(other)

    __hash__ = object.__hash__  # identity: a future is a set member without waiting

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(self._value_now(), ndigits)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        import numpy

        return numpy.asarray(self._value_now(), dtype=dtype)


def _plain(value: Any) -> Any:
    """`value`, or the value a future stands for."""
    return value._value_now() if isinstance(value, StandsForValue) else value


def _binary(op: Any) -> tuple[Any, Any]:
    def forward(self: StandsForValue, other: Any) -> Any:
        return op(self._value_now(), _plain(other))

    def reflected(self: StandsForValue, other: Any) -> Any:
        return op(_plain(other), self._value_now())

    return forward, reflected


def _unary(op: Any) -> Any:
    def apply(self: StandsForValue) -> Any:
        return op(self._value_now())

    return apply


for _name, _op in {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "matmul": operator.matmul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "divmod": divmod, "pow": pow, "lshift": operator.lshift, "rshift": operator.rshift,
    "and": operator.and_, "xor": operator.xor, "or": operator.or_,
}.items():
    _forward, _reflected = _binary(_op)
    setattr(StandsForValue, f"__{_name}__", _forward)
    setattr(StandsForValue, f"__r{_name}__", _reflected)
for _name, _op in {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}.items():
    setattr(StandsForValue, f"__{_name}__", _binary(_op)[0])
for _name, _op in {
    "str": str, "bytes": bytes, "bool": bool, "len": len, "iter": iter, "reversed": reversed,
    "int": int, "float": float, "complex": complex, "index": operator.index,
    "neg": operator.neg, "pos": operator.pos, "abs": abs, "invert": operator.invert,
}.items():
    setattr(StandsForValue, f"__{_name}__", _unary(_op))
del _name, _op, _forward, _reflected
