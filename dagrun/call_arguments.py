"""Walks over a task call's arguments, for the futures nested in them (list, tuple, set, dict,
dataclass and pydantic model fields: see `dagrun.nested`).

The tracker needs them three ways: the upstream runs a call depends on, the same arguments with
executor handles in place of futures (what is submitted), and a fingerprint that names upstream
runs by their own fingerprints (to reuse runs across flow retries). The engine and
`cache_key_fn` need a fourth: the values in place of futures (`resolve_futures`). The cache
key's own walk stays in `caching`, since how it stands in for futures is part of the key format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dagrun.futures import TaskFuture, allow_failure, unmapped
from dagrun.nested import WalkedList, fields_of, holds, instances_in, replaced, travelling

if TYPE_CHECKING:
    from dagrun.task_runs import TaskRun, TaskRunTracker

_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def substitute_handles(
    value: Any, upstream: list[TaskRun], handle_of: Callable[[TaskRun], Any], tolerated: list[TaskRun] | None = None
) -> Any:
    """Copy of `value` with TaskFutures (nested in list/tuple/dict/set, or in the fields of a
    dataclass or model, which then travels as `dagrun.nested.travelling`) replaced by handles;
    the futures' runs are appended to `upstream`. Inside `allow_failure(...)`, a run that did
    not complete stands for its exception, and its run is also appended to `tolerated`."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is TaskFuture:
        upstream.append(value._run)
        return handle_of(value._run)
    if kind is unmapped:
        return substitute_handles(value.value, upstream, handle_of, tolerated)
    if kind in (list, tuple, set, frozenset):
        return kind(substitute_handles(item, upstream, handle_of, tolerated) for item in value)
    if kind is dict:
        return {key: substitute_handles(item, upstream, handle_of, tolerated) for key, item in value.items()}
    if kind is allow_failure:
        inner: list[TaskRun] = []
        substituted = substitute_handles(value.value, inner, _or_exception(handle_of))
        upstream.extend(inner)
        if tolerated is not None:
            tolerated.extend(inner)
        return substituted
    if isinstance(value, WalkedList):  # `task.map`'s FutureList: a plain list of handles
        return [substitute_handles(item, upstream, handle_of, tolerated) for item in value]
    fields = fields_of(value)
    if fields and holds(value, TaskFuture):  # (checked first: `holds` stops at cycles)
        before = len(upstream)
        substituted = {name: substitute_handles(item, upstream, handle_of, tolerated) for name, item in fields.items()}
        if len(upstream) > before:  # holds futures: travels as a tuple the executor walks
            return travelling(value, substituted)
    return value


def _or_exception(handle_of: Callable[[TaskRun], Any]) -> Callable[[TaskRun], Any]:
    """`handle_of`, except that a run which ended without completing gives its exception (what
    a task receives for an upstream passed in `allow_failure`, as in Prefect)."""

    def handle_or_exception(run: TaskRun) -> Any:
        state = run.state
        if state.is_final() and not state.is_completed():
            return state.exception
        return handle_of(run)

    return handle_or_exception


def _no_handle(run: TaskRun) -> None:
    return None


def upstream_of(run: TaskRun) -> list[TaskRun]:
    """The runs `run` depends on; those passed in `allow_failure` also become `run.tolerated`
    (and count as looked at: their failure is the flow's to handle)."""
    upstream: list[TaskRun] = []
    tolerated: list[TaskRun] = []
    substitute_handles((run.args, run.kwargs, run.wait_for), upstream, _no_handle, tolerated)
    if tolerated:
        run.tolerated = tuple(tolerated)
        for up in tolerated:
            up.seen = True
    return upstream


def resolve_futures(value: Any, tracker: TaskRunTracker) -> Any:
    """`value` with TaskFutures nested in it (see `dagrun.nested`) replaced by their results,
    fetched in one round trip."""
    futures: list[TaskFuture] = []
    instances_in(value, TaskFuture, futures)
    if not futures:
        return value
    for future in futures:
        future._run.seen = True  # used as values: a failure raises here, in the flow body
    results = dict(zip(map(id, futures), tracker.results(futures)))
    return replaced(value, TaskFuture, lambda future: results[id(future)])


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
        if kind in (unmapped, allow_failure) or isinstance(value, WalkedList):
            return (kind.__name__, stand_in(value.value if kind in (unmapped, allow_failure) else list(value)))
        return value

    try:
        return tokenize(run.task.name, run.index, stand_in(run.args), stand_in(run.kwargs), ensure_deterministic=True)
    except Exception:  # noqa: BLE001 - an input we cannot fingerprint is simply not reused
        return None
