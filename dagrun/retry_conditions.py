"""Calling a task's `retry_condition_fn`, with Prefect's signature, on the worker.

`retry_condition_fn(task, task_run, state) -> bool` as in Prefect 3: `task_run` tells which
run and attempt failed (`.id`, `.name`, `.run_count`, `.flow_run_id`), `state` is the failed
attempt's `Failed` state (`state.result()` raises the exception). dagrun's earlier
`retry_condition_fn(task, exception)` still works.

A condition that cannot be called that way, or that raises, never replaces the task's own
exception: the attempt is not retried and the exception carries a note saying what went wrong.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagrun.context import current_task_run
from dagrun.states import State, StateType


@dataclass(frozen=True, slots=True)
class FailedTaskRun:
    """What a retry condition knows about the run whose attempt failed (Prefect's `task_run`)."""

    id: str | None
    name: str
    run_count: int
    flow_run_id: str | None


def should_retry(condition: Callable[..., Any], task: Any, exception: BaseException, attempt: int) -> bool:
    """The condition's answer; False (and a note on `exception`) when the condition is broken."""
    context = current_task_run()
    task_run = FailedTaskRun(
        context.task_run_id if context else None,
        context.task_run_name if context else task.name,
        attempt,
        context.flow_run_id if context else None,
    )
    state = State(StateType.FAILED, message=f"{type(exception).__name__}: {exception}", exception=exception)
    try:
        if _takes_two(condition):
            return bool(condition(task, exception))
        return bool(condition(task, task_run, state))
    except Exception as broken:  # noqa: BLE001 - the user's exception stays the task's error
        name = getattr(condition, "__qualname__", repr(condition))
        exception.add_note(
            f"retry_condition_fn {name} failed ({type(broken).__name__}: {broken}), so the task was "
            "not retried; it must be retry_condition_fn(task, task_run, state) -> bool"
        )
        return False


def _takes_two(condition: Callable[..., Any]) -> bool:
    """True for dagrun's older `(task, exception)` conditions (they cannot take three)."""
    try:
        signature = inspect.signature(condition)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(None, None, None)
        return False
    except TypeError:
        pass
    try:
        signature.bind(None, None)
        return True
    except TypeError:
        return False
