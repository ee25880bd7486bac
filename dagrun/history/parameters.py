"""How a flow run's parameters become the JSON stored in the history, with secrets masked.

Parameters are for people reading the history, not for re-running a flow, so the encoding
is lossy on purpose: a value JSON cannot hold is stored as its `repr` (cut to
`MAX_REPR_LENGTH` characters), and a secret is stored as `"****"`. A value is a secret when
it is an instance of a class named `Secret` (`dagrun.Secret` or a look-alike, found by name
so that this module needs no import from the layers above it) or when its `repr` or `str`
already reads `****`. Containers (dict, list, tuple, set) are masked element by element.

    encode_parameters({"day": "2026-11-25", "password": Secret("DB_PASSWORD")})
    -> '{"day": "2026-11-25", "password": "****"}'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MASK = "****"
MAX_REPR_LENGTH = 2000
"""Longest repr stored for a value JSON cannot hold; a big array's repr is not worth keeping."""


def encode_parameters(parameters: Mapping[str, Any]) -> str:
    """The JSON text stored for a flow run's parameters."""
    try:
        plain = {str(name): _plain(value) for name, value in parameters.items()}
    except Exception as exc:  # e.g. the dict changed size while the writer thread read it
        plain = {"<unreadable parameters>": f"{type(exc).__name__}: {exc}"}
    return json.dumps(plain, allow_nan=False)


def _plain(value: Any) -> Any:
    """A JSON-compatible copy of `value`, with secrets masked and the rest as repr."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        # NaN and infinity are not JSON; readers (browsers, PostgreSQL json) reject them.
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return MASK if value == MASK else value
    if _is_secret(value):
        return MASK
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [_plain(item) for item in sorted(value, key=repr)]
    return _repr(value)


def _is_secret(value: Any) -> bool:
    return any(cls.__name__ == "Secret" for cls in type(value).__mro__)


def _repr(value: Any) -> str:
    try:
        text = repr(value)
        if text == MASK or str(value) == MASK:
            return MASK
    except Exception as exc:  # a broken __repr__ must not lose the whole run record
        return f"<{type(value).__name__} object; repr failed: {type(exc).__name__}>"
    if len(text) > MAX_REPR_LENGTH:
        return text[: MAX_REPR_LENGTH - 3] + "..."
    return text
