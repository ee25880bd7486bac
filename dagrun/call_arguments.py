"""Walks over a task call's arguments, for the futures nested in them (list, tuple, set, dict).

The tracker needs them three ways: the upstream runs a call depends on, the same arguments with
executor handles in place of futures (what is submitted), and a fingerprint that names upstream
runs by their own fingerprints (to reuse runs across flow retries). The engine and
`cache_key_fn` need a fourth: the values in place of futures (`resolve_futures`). The cache
key's own walk stays in `caching`, since how it stands in for futures is part of the key format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dagrun.futures import TaskFuture, unmapped
from dagrun.nested import instances_in

if TYPE_CHECKING:
    from dagrun.task_runs import TaskRun, TaskRunTracker

_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def substitute_handles(value: Any, upstream: list[TaskRun], handle_of: Callable[[TaskRun], Any]) -> Any:
    """Copy of `value` with TaskFutures (nested in list/tuple/dict/set) replaced by handles;
    the futures' runs are appended to `upstream`."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is TaskFuture:
        upstream.append(value._run)
        return handle_of(value._run)
    if kind is unmapped:
        return substitute_handles(value.value, upstream, handle_of)
    if kind in (list, tuple, set, frozenset):
        return kind(substitute_handles(item, upstream, handle_of) for item in value)
    if kind is dict:
        return {key: substitute_handles(item, upstream, handle_of) for key, item in value.items()}
    return value


def _no_handle(run: TaskRun) -> None:
    return None


def upstream_of(run: TaskRun) -> list[TaskRun]:
    upstream: list[TaskRun] = []
    substitute_handles((run.args, run.kwargs, run.wait_for), upstream, _no_handle)
    return upstream


def resolve_futures(value: Any, tracker: TaskRunTracker) -> Any:
    """`value` with TaskFutures nested in list/tuple/dict/set replaced by their results,
    fetched in one round trip."""
    futures: list[TaskFuture] = []
    instances_in(value, TaskFuture, futures)
    if not futures:
        return value
    return _replace_futures(value, dict(zip(map(id, futures), tracker.results(futures))))


def _replace_futures(value: Any, results: dict[int, Any]) -> Any:
    kind = type(value)
    if kind is TaskFuture:
        return results[id(value)]
    if kind in (list, tuple, set, frozenset):
        return kind(_replace_futures(item, results) for item in value)
    if kind is dict:
        return {key: _replace_futures(item, results) for key, item in value.items()}
    return value


def fingerprint(run: TaskRun) -> str | None:
    """A deterministic digest of a call's inputs (upstream runs by their own fingerprints)."""
    from dask.base import tokenize

    def stand_in(value: Any) -> Any:
        kind = type(value)
        if kind is TaskFuture:
            return ("TaskRun", value._run.fingerprint)
        if kind in (list, tuple, set, frozenset):
            return (kind.__name__, [stand_in(item) for item in value])
        if kind is dict:
            return ("dict", sorted((repr(k), stand_in(v)) for k, v in value.items()))
        return value

    try:
        return tokenize(run.task.name, run.index, stand_in(run.args), stand_in(run.kwargs), ensure_deterministic=True)
    except Exception:  # noqa: BLE001 - an input we cannot fingerprint is simply not reused
        return None
