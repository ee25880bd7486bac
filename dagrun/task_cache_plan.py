"""Hit or miss for a cached task call, decided on the driver before dispatch.

A hit never takes a worker slot: its run becomes `Cached` at once and its value is read from
the store by the driver when asked for (`result_batches`). A miss is submitted with its cache
key, so the worker writes the entry. The key needs the content hashes of upstream results:
from their store entries when known, else computed where the result lives. A key that cannot
be computed (an unhashable argument, a failing `cache_key_fn`) fails the run, with a note.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from dagrun.caching import CacheKeyContext
from dagrun.call_arguments import resolve_futures
from dagrun.executors.base import Submission
from dagrun.states import State, StateType
from dagrun.task_run_record import TaskRun, add_note, describe, failed_upstream

if TYPE_CHECKING:
    from dagrun.futures import TaskFuture
    from dagrun.task_runs import TaskRunTracker


def plan_cached(tracker: TaskRunTracker, run: TaskRun) -> Submission | None:
    """What to send for a cached task's run; None for a hit, or when the run cannot run."""
    if failed_upstream(run) is not None:
        return tracker.prepare(run)  # records NotRun
    planner = tracker.cache_planner()

    def upstream_hash(future: TaskFuture) -> str:
        return _content_hash(tracker, future._run)

    def resolve_values(value: Any) -> Any:
        """`value` with futures replaced by their results (for `cache_key_fn` only)."""
        return resolve_futures(value, tracker)

    try:
        context = CacheKeyContext(
            run.task, run.name, tracker.flow_run_id, tracker.flow_run_name, tracker.flow_parameters
        )
        parts = planner.key_parts(run.task, run.name, run.args, run.kwargs, upstream_hash, context, resolve_values)
        decision = planner.decide(run.task, run.name, parts)
    except Exception as exc:  # an unhashable argument, a failing cache_key_fn
        add_note(exc, f"while computing the cache key of task run '{run.name}'")
        tracker.log(run, logging.ERROR, f"Task run '{run.name}' failed: {describe(exc)}")
        tracker.set_state(run, State(StateType.FAILED, message=describe(exc), exception=exc))
        return None
    run.cache_key = parts.key
    if decision.hit:
        run.content_hash = decision.entry.checksum
        tracker.batches.hit(run, decision.entry.size)
        message = f"Cached '{run.task.name}' (key {parts.key[:12]}...)"
        tracker.log(run, logging.INFO, message)
        tracker.set_state(run, State(StateType.CACHED, message=message))
        return None
    submission = tracker.prepare(run)
    if submission is None:
        return None
    return dataclasses.replace(submission, cache_key=parts.key)


def _content_hash(tracker: TaskRunTracker, run: TaskRun) -> str:
    """An upstream result's content hash: from its store entry, else computed where it lives."""
    if run.content_hash is None:
        run.content_hash = tracker.content_hashes.pop(run.id, None)
    if run.content_hash is None:
        handle = tracker.session.content_hash(tracker.handle_of(run), run.task.result_serializer)
        run.content_hash = tracker.session.gather([handle])[0]
    return run.content_hash
