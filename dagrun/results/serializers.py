"""Serializers that turn a task's result into payload frames and back.

| name          | values                                            | notes                      |
|---------------|---------------------------------------------------|----------------------------|
| `msgpack`     | plain data: None, bool, int (64-bit), float, str, | safe to load, portable     |
|               | bytes, list, dict with keys of those scalar types |                            |
| `cloudpickle` | anything cloudpickle can pickle (protocol 5)      | big buffers stay out of band |
| `auto`        | msgpack for plain data, else cloudpickle          | the default                |

msgpack is strict: it only takes a value it gives back exactly as it was. A tuple would come back
as a list, a bytearray as bytes, an IntEnum or an OrderedDict as its base type, so such values
are refused (SerializationError) and `auto` falls back to cloudpickle, which keeps them intact.

cloudpickle frames are `[pickle stream, buffer, buffer, ...]`: numpy arrays and pandas frames
hand their data to pickle protocol 5 as out-of-band buffers, which are written and read without
being copied into the pickle stream; `loads` rebuilds them over slices of the read buffer.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any, Union

import cloudpickle
import msgpack

from dagrun.errors import ConfigError, SerializationError

Frame = Union[bytes, bytearray, memoryview]

SERIALIZERS = ("auto", "msgpack", "cloudpickle")  # accepted by dumps
STORED_SERIALIZERS = ("msgpack", "cloudpickle")  # what an entry can say it was written with

# Buffers smaller than this go in the pickle stream: a frame per tiny array is not worth it.
_OUT_OF_BAND_MIN_BYTES = 64 * 1024
_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_PLAIN_KEYS = _PLAIN_SCALARS
_MAX_DEPTH = 256  # msgpack's own nesting limit is 512; deeper data goes to cloudpickle


def dumps(value: Any, serializer: str = "auto") -> tuple[str, list[Frame]]:
    """Serialize `value`; returns the serializer actually used and the payload frames."""
    check_serializer(serializer, SERIALIZERS)
    if serializer in ("auto", "msgpack"):
        try:
            return "msgpack", [_msgpack_dumps(value)]
        except SerializationError:
            if serializer == "msgpack":
                raise
    return "cloudpickle", _cloudpickle_dumps(value)


def loads(serializer: str, frames: Sequence[Frame]) -> Any:
    """Rebuild a value from the frames `dumps` produced with `serializer`."""
    check_serializer(serializer, STORED_SERIALIZERS)
    if not frames:
        raise SerializationError(f"a {serializer} payload needs at least one frame")
    try:
        if serializer == "msgpack":
            if len(frames) != 1:
                raise SerializationError(f"a msgpack payload is one frame, got {len(frames)}")
            return msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
        return pickle.loads(frames[0], buffers=frames[1:])
    except SerializationError:
        raise
    except Exception as exc:  # a missing class, a failing __setstate__: not ours to type
        raise SerializationError(
            f"Could not deserialize a {serializer} payload: {type(exc).__name__}: {exc}"
        ) from exc


def check_serializer(name: str, accepted: Sequence[str] = SERIALIZERS) -> None:
    """Raise ConfigError unless `name` is one of the accepted serializer names."""
    if name not in accepted:
        raise ConfigError(
            f"Unknown result serializer {name!r}; use one of: {', '.join(map(repr, accepted))}"
        )


def _msgpack_dumps(value: Any) -> bytes:
    if not _is_plain(value, 0):
        raise SerializationError(
            f"msgpack cannot represent a {_describe(value)} faithfully; "
            "use result_serializer='cloudpickle' (or 'auto')"
        )
    try:
        # strict_types: subclasses (IntEnum, OrderedDict) are not silently packed as base types.
        return msgpack.packb(value, use_bin_type=True, strict_types=True, default=_refuse)
    except (TypeError, ValueError, OverflowError) as exc:  # ints over 64 bits, lone surrogates
        raise SerializationError(
            f"msgpack cannot represent a {_describe(value)}: {exc}; "
            "use result_serializer='cloudpickle' (or 'auto')"
        ) from exc


def _is_plain(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if depth >= _MAX_DEPTH:
        return False
    if kind is list:
        # The common case, a list of scalars, is checked by a C-level pass over the types.
        return _PLAIN_SCALARS.issuperset(map(type, value)) or all(
            _is_plain(item, depth + 1) for item in value
        )
    if kind is dict:
        return _PLAIN_KEYS.issuperset(map(type, value)) and all(
            _is_plain(item, depth + 1) for item in value.values()
        )
    return False  # tuple, bytearray, memoryview, subclasses, everything else


def _refuse(value: Any) -> Any:
    raise TypeError(f"not plain data: {type(value).__qualname__}")


def _cloudpickle_dumps(value: Any) -> list[Frame]:
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        # Returning a true value keeps the buffer in the pickle stream.
        try:
            view = buffer.raw()  # fails for non-contiguous buffers, which pickle copies anyway
        except BufferError:
            return True
        if view.nbytes < _OUT_OF_BAND_MIN_BYTES:
            return True
        buffers.append(view)
        return False

    try:
        stream = cloudpickle.dumps(value, protocol=5, buffer_callback=out_of_band)
    except Exception as exc:  # PicklingError, TypeError, RecursionError, a failing __reduce__
        raise SerializationError(
            f"cloudpickle cannot serialize a {_describe(value)}: {type(exc).__name__}: {exc}"
        ) from exc
    return [stream, *buffers]


def _describe(value: Any) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"
