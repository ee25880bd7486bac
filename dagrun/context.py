"""The run context: which flow run or task run the current code belongs to.

Two `ContextVar`s, one for the flow run active in the driver and one for the task run active
on a worker (or in-process). `enter_*` and the context manager exit are symmetric, so nested
flows and in-process task calls restore the outer context exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

LogSink = Callable[[dict], None]
"""Receives one log line as a plain dict (picklable, so it can travel from a worker)."""


@dataclass(frozen=True, slots=True)
class TaskRunContext:
    """What code running inside a task can know about its run."""

    task: Any
    task_run_id: str
    task_run_name: str
    flow_run_id: str | None
    flow_run_name: str | None
    log_sink: LogSink
    log_prints: bool


@dataclass(frozen=True, slots=True)
class FlowRunContext:
    """The flow run whose body is executing in the driver; `engine` submits its tasks."""

    flow: Any
    flow_run_id: str
    flow_run_name: str
    engine: Any
    log_sink: LogSink
    log_prints: bool


_flow_run: ContextVar[FlowRunContext | None] = ContextVar("dagrun_flow_run", default=None)
_task_run: ContextVar[TaskRunContext | None] = ContextVar("dagrun_task_run", default=None)


def current_flow_run() -> FlowRunContext | None:
    return _flow_run.get()


def current_task_run() -> TaskRunContext | None:
    return _task_run.get()


@contextmanager
def flow_run_scope(context: FlowRunContext) -> Iterator[FlowRunContext]:
    """Make `context` the active flow run (and no task run) for the duration of the block."""
    flow_token = _flow_run.set(context)
    task_token = _task_run.set(None)
    try:
        yield context
    finally:
        _task_run.reset(task_token)
        _flow_run.reset(flow_token)


@contextmanager
def task_run_scope(context: TaskRunContext) -> Iterator[TaskRunContext]:
    """Make `context` the active task run for the duration of the block."""
    token = _task_run.set(context)
    try:
        yield context
    finally:
        _task_run.reset(token)
