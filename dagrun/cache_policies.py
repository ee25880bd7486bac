"""Prefect 3's cache policies, mapped onto the result store's keys.

| policy              | the key depends on                                          |
|---------------------|-------------------------------------------------------------|
| `INPUTS`            | the call's arguments (upstream results by content hash)     |
| `TASK_SOURCE`       | the task's code (or its `version=`)                          |
| `FLOW_PARAMETERS`   | the flow run's parameters                                    |
| `RUN_ID`            | the flow run's id: reuse only within one run (flow retries)   |
| `NO_CACHE`          | nothing: the task is never cached                            |
| `DEFAULT`           | `INPUTS + TASK_SOURCE + RUN_ID` (Prefect's default)          |

Policies combine with `+` and drop arguments with `-`: `INPUTS - "debug" + TASK_SOURCE`.
A task with a policy other than `NO_CACHE` is cached (as with `cache=True`): its result is
written to the result store and reused while the key matches. Unlike Prefect, the key also
holds the task's name, so two tasks never share an entry by accident.

This module runs on workers too (a `Task` holding a policy is unpickled there): it imports
only `errors`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from dagrun.errors import ConfigError

_PARTS = ("inputs", "task_source", "flow_parameters", "run_id")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Which parts of a call make its cache key; empty parts mean `NO_CACHE`."""

    parts: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.parts) - set(_PARTS)
        if unknown:
            raise ConfigError(f"unknown cache policy part(s) {sorted(unknown)}; use {', '.join(_PARTS)}")

    @property
    def caches(self) -> bool:
        """False for `NO_CACHE` (alone or added to nothing else)."""
        return bool(self.parts)

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            raise ConfigError(f"cache policies combine with other policies, got {other!r}")
        return CachePolicy(self.parts | other.parts, self.exclude | other.exclude)

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            raise ConfigError(f"a cache policy excludes argument names (str), got {name!r}")
        return CachePolicy(self.parts, self.exclude | {name})

    def __repr__(self) -> str:
        if not self.parts:
            return "NO_CACHE"
        text = " + ".join(part.upper() for part in _PARTS if part in self.parts)
        return text + "".join(f" - {name!r}" for name in sorted(self.exclude))


INPUTS = CachePolicy(frozenset({"inputs"}))
TASK_SOURCE = CachePolicy(frozenset({"task_source"}))
FLOW_PARAMETERS = CachePolicy(frozenset({"flow_parameters"}))
RUN_ID = CachePolicy(frozenset({"run_id"}))
NO_CACHE = CachePolicy()
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID

__all__ = ["DEFAULT", "FLOW_PARAMETERS", "INPUTS", "NO_CACHE", "RUN_ID", "TASK_SOURCE", "CachePolicy"]


def resolve_cache_options(
    task_name: str, cache: bool, cache_policy: CachePolicy | None, persist_result: bool | None
) -> tuple[bool, CachePolicy | None]:
    """(whether the task is cached, the policy its key follows: None = dagrun's default key).

    As in Prefect 3: a policy other than `NO_CACHE` persists and reuses results;
    `persist_result=True` alone persists under `DEFAULT` (reused within the same flow run,
    e.g. by a flow retry); `persist_result=False` turns caching off (a policy is ignored with a warning).
    """
    if cache_policy is not None and not isinstance(cache_policy, CachePolicy):
        raise ConfigError(
            f"cache_policy of task '{task_name}' must be a policy from dagrun.cache_policies "
            f"(INPUTS, TASK_SOURCE, FLOW_PARAMETERS, RUN_ID, NO_CACHE, combined with +), got {cache_policy!r}"
        )
    if persist_result is not None and not isinstance(persist_result, bool):
        raise ConfigError(f"persist_result of task '{task_name}' must be True, False or None, got {persist_result!r}")
    if persist_result is False:
        if cache:
            raise ConfigError(
                f"task '{task_name}': persist_result=False turns caching off, but cache=True asks "
                "for it; drop one of them"
            )
        if cache_policy is not None and cache_policy.caches:  # Prefect warns and goes on, too
            warnings.warn(
                f"task '{task_name}': ignoring cache_policy={cache_policy!r} because persist_result=False",
                stacklevel=4,
            )
        return False, None
    if cache_policy is not None:
        if not cache_policy.caches:
            return False, None
        return True, cache_policy
    if persist_result and not cache:
        return True, DEFAULT
    return cache, None
