"""What a task run reports while it runs: small typed records, sent by whatever runs it.

This module runs on workers: it imports nothing of the engine, the executors or the history
(only `dagrun.tracebacks`, which imports nothing of dagrun).
The task wrapper (`dagrun.runner`) emits one record per fact; the executor carries them to the
driver on a channel of their own (never mixed into log lines), where the run history folds
them into task-run states as they arrive (`dagrun.live_history`).

| record            | sent when                         | carries                                      |
|-------------------|-----------------------------------|----------------------------------------------|
| `TaskRunStarted`  | an attempt begins (slots held)    | attempt, start time                          |
| `AttemptFailed`   | an attempt raised                 | its start, end, error, traceback; retry?     |
| `TaskRunFinished` | the run returned a value          | last attempt's start, end; stored result's   |
|                   |                                   | key, size and checksum; a returned state's   |
|                   |                                   | message                                      |

Times are epoch seconds on the clock of the process that ran the task; the executor that
receives a record converts them to the driver's clock and fills in `worker` (`decode`). On the
wire a record is a plain list, `[tag, field, ...]` without `worker` (msgpack-friendly).

Records are `NamedTuple`s rather than frozen dataclasses: as immutable and typed, but built in
a fraction of the time, and two of them are built per task run on both sides of the channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from dagrun.tracebacks import views_of


class TaskRunStarted(NamedTuple):
    """Attempt `attempt` (from 1) of a task run began at `start_time`."""

    flow_run_id: str
    task_run_id: str
    attempt: int
    start_time: float
    worker: str | None = None


class AttemptFailed(NamedTuple):
    """Attempt `attempt` raised; `retrying` says whether another attempt follows (`message` is
    the retry line then), else the run failed. `run_start_time` is the first attempt's start."""

    flow_run_id: str
    task_run_id: str
    attempt: int
    run_start_time: float
    start_time: float
    end_time: float
    error: str
    traceback: str  # the user's view, and every frame (see `dagrun.tracebacks`)
    full_traceback: str
    retrying: bool
    message: str = ""
    worker: str | None = None


class TaskRunFinished(NamedTuple):
    """The run returned a value after `attempt` attempts. A cached task's result was written
    to the store under `cache_key`: `size` and `checksum` describe that entry (no data)."""

    flow_run_id: str
    task_run_id: str
    attempt: int
    run_start_time: float
    start_time: float
    end_time: float
    cache_key: str | None = None
    size: int | None = None
    checksum: str | None = None
    message: str = ""  # the message of a `Completed(message=...)` the task returned
    worker: str | None = None


TaskEvent = TaskRunStarted | AttemptFailed | TaskRunFinished
EventSink = Callable[[TaskEvent], None]

_TAGS = {TaskRunStarted: 0, AttemptFailed: 1, TaskRunFinished: 2}
_KINDS = (TaskRunStarted, AttemptFailed, TaskRunFinished)


def encode(event: TaskEvent) -> list:
    """`event` as a list of plain values, for msgpack: its tag, then its fields but `worker`."""
    return [_TAGS[type(event)], *event[:-1]]


def decode(item: list, worker: str, offset: float) -> TaskEvent:
    """The record `encode` made, sent by `worker`, with its times moved to the receiver's
    clock: `offset` is how far the worker's clock runs ahead of it (seconds)."""
    kind = _KINDS[item[0]]
    event = kind(*item[1:], worker)
    if not offset:
        return event
    if kind is TaskRunStarted:
        return event._replace(start_time=event.start_time - offset)
    return event._replace(
        run_start_time=event.run_start_time - offset, start_time=event.start_time - offset,
        end_time=event.end_time - offset,
    )


class AttemptReporter:
    """Emits the records of one task run as its attempts go (used by `dagrun.runner`).

    Without a sink (the run history is off) it reports nothing, except a stored result's
    checksum, which the driver needs for downstream cache keys."""

    __slots__ = ("_flow_run_id", "_task_run_id", "_sink", "_report", "_starts")

    def __init__(self, flow_run_id: str | None, task_run_id: str, sink: EventSink | None, report: bool) -> None:
        self._flow_run_id = flow_run_id or ""
        self._task_run_id = task_run_id
        self._sink = sink
        self._report = report and sink is not None
        self._starts: list[float] = []  # start time of each attempt so far

    def attempts(self, fn: Callable) -> Callable:
        """`fn`, reporting each call as the start of an attempt (the retry loop calls it)."""
        if not self._report:
            return fn

        def attempt(*args: object, **kwargs: object) -> object:
            start = time.time()
            self._starts.append(start)
            self._sink(TaskRunStarted(self._flow_run_id, self._task_run_id, len(self._starts), start))
            return fn(*args, **kwargs)

        return attempt

    def failed(
        self, exception: BaseException, user_traceback: str | None = None, full_traceback: str | None = None,
        *, retrying: bool, message: str = "",
    ) -> None:
        """The current attempt raised `exception` (its text already masked); its traceback
        views are rendered from it unless given."""
        if not self._report:
            return
        end = time.time()
        start = self._starts[-1] if self._starts else end
        if user_traceback is None or full_traceback is None:
            views = views_of(exception)
            user_traceback, full_traceback = views.user, views.full
        self._sink(AttemptFailed(
            self._flow_run_id, self._task_run_id, max(len(self._starts), 1),
            self._starts[0] if self._starts else end, start, end,
            f"{type(exception).__name__}: {exception}", user_traceback, full_traceback, retrying, message,
        ))

    def finished(
        self, cache_key: str | None = None, size: int | None = None, checksum: str | None = None, message: str = "",
    ) -> None:
        """The run returned; with a stored result, its entry's key, size and checksum; `message`
        is that of a `Completed(message=...)` state the task returned."""
        if self._sink is None or not (self._report or checksum is not None):
            return
        end = time.time()
        self._sink(TaskRunFinished(
            self._flow_run_id, self._task_run_id, max(len(self._starts), 1),
            self._starts[0] if self._starts else end, self._starts[-1] if self._starts else end, end,
            cache_key, size, checksum, message,
        ))
