"""Secrets: values a flow needs that no record may show, and the masking of their values.

    Secret("DB_PASSWORD")            names a secret; nothing is read yet
    Secret("DB_PASSWORD").get()      the value: the environment variable DB_PASSWORD, else the
                                     file $DAGRUN_HOME/secrets/DB_PASSWORD (mode 0600)
    repr(secret) / str(secret)       "Secret('DB_PASSWORD', ****)" / "****"
    mask("pw is hunter22")           "pw is ****" once "hunter22" is a known secret value

Where the value lives: a `Secret` pickles as its name only, and `.get()` reads the value where
it is called — on a worker, from that worker's environment or `$DAGRUN_HOME` (a local
cluster's workers inherit the driver's). So the value is never in Dask's graph, on the
scheduler, in a cache key or in a stored parameter; on a remote cluster the secret is
provisioned on the workers, like any credential they use.

Masking: every value read with `.get()`, and every `pydantic.SecretStr` / `SecretBytes`
parameter or task argument, becomes a known value of this process; each log line leaves the
process with known values replaced by `****` (on a worker before the line is sent to the
driver, on the driver before the terminal and the history). The set is process-wide on
purpose: a value seen once is masked in every line the process emits afterwards. The driver
also hands its known values to the run's workers with each task's spec, so a value the flow
passes to a task as a plain string is masked on the worker too. Values shorter than
`MIN_MASKED_LENGTH` characters are not masked (they would blank out ordinary text).

This module runs on workers: it imports nothing above `config` and `errors`.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagrun.config import dagrun_home
from dagrun.errors import ConfigError

MASK = "****"
MIN_MASKED_LENGTH = 4
SECRET_TYPE_NAMES = frozenset({"Secret", "SecretStr", "SecretBytes"})
"""Class names (dagrun's `Secret`, pydantic's secret types) whose values are never shown."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class Secret:
    """A named secret, read from the environment or `$DAGRUN_HOME/secrets/NAME` by `.get()`.

    As a flow parameter (`password: Secret`), it accepts a `Secret` or a secret's name, so
    `dagrun run flow.py --param password=DB_PASSWORD` works; the name is what is stored.
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"Secret name {self.name!r} is not valid: use letters, digits, '_', '.' or '-' "
                "(the name of an environment variable or of a file in $DAGRUN_HOME/secrets)"
            )

    def get(self) -> str:
        """The value, read now (so a rotated secret is picked up); it becomes a masked value."""
        value = os.environ.get(self.name)
        if value is None:
            value = _read_secret_file(self.name)
        remember(value)
        return value

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, {MASK})"

    def __str__(self) -> str:
        return MASK

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Validation as a flow parameter: a `Secret` or a name; shown and serialized as `****`."""
        from pydantic_core import core_schema  # only flows with type hints import pydantic

        return core_schema.no_info_plain_validator_function(
            _coerce_secret,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _: MASK),
        )


def _coerce_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str) and _NAME.fullmatch(value):
        return Secret(value)
    # Never echo the input: a user may have given the value where the name belongs.
    raise ValueError("expected a secret's name (letters, digits, '_', '.', '-') or a dagrun.Secret")


def _read_secret_file(name: str) -> str:
    """The value in `$DAGRUN_HOME/secrets/NAME`, refused when group or others may read it."""
    path = dagrun_home() / "secrets" / name
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigError(
            f"Secret '{name}' is not set: set the environment variable {name} or write the "
            f"value to {path} (chmod 600)"
        ) from None
    with os.fdopen(descriptor, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode  # of the file opened, not of a swapped path
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"Secret file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {path}"
            )
        text = file.read().decode("utf-8")
    return text[:-1] if text.endswith("\n") else text  # `echo value > file` adds one newline


class _KnownValues:
    """The secret values this process has seen, and one regex that replaces them all.

    Both are replaced, never changed in place, so threads that read them need no lock."""

    def __init__(self) -> None:
        self.values: tuple[str, ...] = ()  # longest first, so a value inside another is not cut
        self.pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        new = {value for value in values if len(value) >= MIN_MASKED_LENGTH}.difference(self.values)
        if not new:
            return
        with self._lock:
            known = sorted(set(self.values) | new, key=lambda value: (-len(value), value))
            self.pattern = re.compile("|".join(map(re.escape, known)))
            self.values = tuple(known)


_known = _KnownValues()


def remember(*values: str | bytes) -> None:
    """Make values known secrets of this process: masked in every line it emits from now on."""
    if not values:
        return
    texts = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            texts.append(value)
    _known.add(texts)


def known_values() -> tuple[str, ...]:
    """The secret values this process has seen (the driver hands them to its workers)."""
    return _known.values


def mask(text: str) -> str:
    """`text` with every known secret value replaced by `****`."""
    pattern = _known.pattern
    if pattern is None or not isinstance(text, str):
        return text
    return pattern.sub(MASK, text)


def mask_record(record: dict) -> dict:
    """A log line or worker record with known secret values masked in its text fields."""
    if _known.pattern is None:
        return record
    return {key: mask(value) if isinstance(value, str) else value for key, value in record.items()}


def mask_exception(exception: BaseException) -> None:
    """Mask known values in the messages (args and notes) of an exception and its causes, in
    place: it keeps its type and traceback, and its text says `****` wherever it is shown."""
    if _known.pattern is None:
        return
    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            current.args = tuple(mask(arg) if isinstance(arg, str) else arg for arg in current.args)
            notes = getattr(current, "__notes__", None)
            if isinstance(notes, list):
                current.__notes__ = [mask(note) if isinstance(note, str) else note for note in notes]
        except Exception:  # noqa: BLE001 - an exception that refuses new args keeps its own
            pass
        current = current.__cause__ or current.__context__


def is_secret(value: Any) -> bool:
    """True for a `Secret` or a pydantic secret (found by class name, never by attribute access,
    which on a TaskFuture would wait for the task)."""
    kind = type(value)
    answer = _SECRET_TYPES.get(kind)
    if answer is None:
        answer = _SECRET_TYPES[kind] = any(cls.__name__ in SECRET_TYPE_NAMES for cls in kind.__mro__)
    return answer


_SECRET_TYPES: dict[type, bool] = {}  # per class, once: this runs for every task argument


def is_secret_type(annotation: Any, depth: int = 4) -> bool:
    """True when a type hint is or contains a secret type (`Secret`, `SecretStr | None`,
    `list[SecretStr]`, `pydantic.Secret[int]`); a hint left as a string counts by its text."""
    if isinstance(annotation, str):
        return any(name in annotation for name in SECRET_TYPE_NAMES)
    if isinstance(annotation, type) and any(cls.__name__ in SECRET_TYPE_NAMES for cls in annotation.__mro__):
        return True
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and origin.__name__ in SECRET_TYPE_NAMES:
        return True
    return depth > 0 and any(is_secret_type(arg, depth - 1) for arg in typing.get_args(annotation))


def remember_secrets_in(values: Iterable[Any], depth: int = 2) -> None:
    """Make the values of pydantic secrets among `values` (and inside small plain containers,
    two levels deep) known; a `Secret` becomes known when it is read with `.get()`.

    Runs for every task call, so a container of more than `_SCANNED_ITEMS` items is not
    searched: a task mapping over a million rows pays nothing for it."""
    for value in values:
        kind = type(value)
        if kind in _PLAIN_TYPES:
            continue
        if kind in _CONTAINER_TYPES:
            if depth > 0 and len(value) <= _SCANNED_ITEMS:
                remember_secrets_in(value.values() if kind is dict else value, depth - 1)
        elif is_secret(value) and not isinstance(value, Secret):
            remember(value.get_secret_value())


_SCANNED_ITEMS = 64
_PLAIN_TYPES = frozenset({str, int, float, bool, bytes, type(None)})
_CONTAINER_TYPES = frozenset({list, tuple, set, frozenset, dict})


def remember_parameters(parameters: Mapping[str, Any]) -> None:
    """Make the secret values among a flow run's parameters known (see `remember_secrets_in`)."""
    remember_secrets_in(parameters.values())
