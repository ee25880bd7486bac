"""What a cached task's key and entry are made of, on either side of the cluster.

The driver's planner (`dagrun.caching`) builds keys from these pieces before dispatch; a
worker only needs `expiry_time` when it writes the entry, and unpickling a `Task` needs the
option checks and `task_input_hash` (the Prefect-style key function, re-exported by
`dagrun.tasks`). So this module imports only `hashing` and `errors`: it runs on workers.

| function                          | answers                                                  |
|-----------------------------------|----------------------------------------------------------|
| `task_identity(task)`             | the hash standing for the task's code (or its `version=`) |
| `task_input_hash(context, params)` | a key from the task's code and its inputs' values       |
| `expiry_time(task)`               | when an entry written now expires (None: never)          |
| `validate_cache_options(task)`    | fails at decoration on options that could never work     |
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dagrun.errors import ConfigError
from dagrun.hashing import hash_function, hash_struct, hash_value


@dataclass(frozen=True, slots=True)
class CacheKeyContext:
    """What `cache_key_fn(context, parameters)` can know about the call (as in Prefect)."""

    task: Any
    task_run_name: str
    flow_run_id: str
    flow_run_name: str


def task_input_hash(context: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
    """Prefect-compatible key function: the task's code plus its inputs' values."""
    what = f"the inputs of task '{context.task.name}'"
    return hash_struct(["TaskInputHash", task_identity(context.task), hash_value(parameters, what=what)])


def task_identity(task: Any) -> str:
    """A task's `version=` when pinned, else a hash of its code (source, closure, globals)."""
    if task.version is not None:
        return hash_struct(["TaskVersion", task.name, str(task.version)])
    return hash_struct(["TaskCode", task.name, hash_function(task.fn)])


def expiry_time(task: Any) -> float | None:
    """When an entry written now expires, from `cache_expiration` (timedelta or seconds)."""
    expiration = task.cache_expiration
    if expiration is None:
        return None
    seconds = expiration.total_seconds() if isinstance(expiration, timedelta) else float(expiration)
    return time.time() + seconds


def validate_cache_options(task: Any) -> None:
    """Fail at decoration on options that could never work."""
    expiration = task.cache_expiration
    if expiration is not None and not isinstance(expiration, (timedelta, int, float)):
        raise ConfigError(
            f"cache_expiration of task '{task.name}' must be a timedelta or seconds, got {expiration!r}"
        )
    if task.cache_key_fn is not None and not callable(task.cache_key_fn):
        raise ConfigError(f"cache_key_fn of task '{task.name}' must be callable")
