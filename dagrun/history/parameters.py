"""How a flow run's parameters become the JSON stored in the history: secrets masked, size capped.

Parameters are for people reading the history, not for re-running a flow, so the encoding
is lossy on purpose:
- a value JSON cannot hold is stored as its `repr` (cut to `MAX_REPR_LENGTH` characters);
- a secret is stored as `"****"`: a `dagrun.Secret` or a pydantic `SecretStr` / `SecretBytes`
  (found by class name), a value whose `repr` or `str` already reads `****`, and any known
  secret value inside a text (see `dagrun.secrets`);
- a parameter over `MAX_PARAMETER_BYTES` (a text's UTF-8, anything else's JSON) is stored as
  a one-line summary with its type, size and SHA-256 of those bytes, so one
  huge argument cannot grow the database or the API's pages by megabytes.
Containers (dict, list, tuple, set) are masked element by element.

    encode_parameters({"day": "2026-11-25", "password": Secret("DB_PASSWORD")})
    -> '{"day": "2026-11-25", "password": "****"}'
    encode_parameters({"blob": "x" * 10_000_000})
    -> '{"blob": "<str of 10000000 bytes, sha256 2d3f...: too large to store (over 65536 bytes)>"}'
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from dagrun.secrets import MASK, is_secret, mask

MAX_REPR_LENGTH = 2000
"""Longest repr stored for a value JSON cannot hold; a big array's repr is not worth keeping."""
MAX_PARAMETER_BYTES = 64 * 1024
"""Largest JSON stored for one parameter; a larger one is stored as its summary."""


def encode_parameters(parameters: Mapping[str, Any]) -> str:
    """The JSON text stored for a flow run's parameters."""
    try:
        plain = {str(name): _capped(value) for name, value in parameters.items()}
    except Exception as exc:  # e.g. the dict changed size while the writer thread read it
        plain = {"<unreadable parameters>": f"{type(exc).__name__}: {exc}"}
    return json.dumps(plain, allow_nan=False)


def capped_parameters(parameters: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """Decoded parameters with each one over `limit` JSON bytes replaced by its summary
    (a listing shows a preview; the run's own page has what was stored)."""
    return {name: _cap(value, value, limit, "list") for name, value in parameters.items()}


def _capped(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)) and len(value) > MAX_PARAMETER_BYTES:
        return _summary(type(value).__name__, bytes(value), MAX_PARAMETER_BYTES, "store")  # no 4x repr
    return _cap(value, _plain(value), MAX_PARAMETER_BYTES, "store")


def _cap(value: Any, plain: Any, limit: int, verb: str) -> Any:
    """`plain` (the JSON form of `value`), or its summary when its JSON is over `limit` bytes."""
    if isinstance(plain, str):  # measured as UTF-8 text
        if len(plain) * 4 <= limit:  # short enough whatever it encodes to
            return plain
        data = plain.encode("utf-8", "surrogatepass")
        return plain if len(data) <= limit else _summary(type(value).__name__, data, limit, verb)
    if plain is None or isinstance(plain, (bool, int, float)):
        return plain
    data = json.dumps(plain, allow_nan=False).encode("utf-8")
    return plain if len(data) <= limit else _summary(type(value).__name__, data, limit, verb)


def _summary(type_name: str, data: bytes, limit: int, verb: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"<{type_name} of {len(data)} bytes, sha256 {digest}: too large to {verb} (over {limit} bytes)>"


def _plain(value: Any) -> Any:
    """A JSON-compatible copy of `value`, with secrets masked and the rest as repr."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        # NaN and infinity are not JSON; readers (browsers, PostgreSQL json) reject them.
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return MASK if value == MASK else mask(value)
    if is_secret(value):
        return MASK
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [_plain(item) for item in sorted(value, key=repr)]
    return _repr(value)


def _repr(value: Any) -> str:
    try:
        text = repr(value)
        if text == MASK or str(value) == MASK:
            return MASK
    except Exception as exc:  # a broken __repr__ must not lose the whole run record
        return f"<{type(value).__name__} object; repr failed: {type(exc).__name__}>"
    if len(text) > MAX_REPR_LENGTH:
        text = text[: MAX_REPR_LENGTH - 3] + "..."
    return mask(text)
