"""Calling state hooks, Prefect's way: `hook(task_or_flow, run_record, state)`, and a hook that
raises is logged, never changes the run's outcome.

Worker-side: a task's `on_running` hooks run where its attempts run (on a Dask worker, in a
thread of the thread executor), just before each attempt's body, as Prefect's task engine
calls them on entering `Running`. The driver's `dagrun.hooks` calls `on_completion` /
`on_failure` hooks and flow hooks with the same `call_hooks`. Nothing here needs the driver.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dagrun.async_support import run_on_task_loop
from dagrun.states import State, StateType

logger = logging.getLogger("dagrun.hooks")


@dataclass(frozen=True, slots=True)
class TaskRunRecord:
    """What a task hook learns about the run it is called for."""

    id: str
    name: str
    task_name: str
    flow_run_id: str | None
    cache_key: str | None


class HookLists:
    """Prefect's hook lists of a task or flow (`on_completion_hooks`, `on_failure_hooks`,
    `on_running_hooks`) and its decorator form of adding one: `@my_task.on_running`."""

    on_completion_hooks: list[Callable]
    on_failure_hooks: list[Callable]
    on_running_hooks: list[Callable]

    def _set_hooks(self, on_completion: Any, on_failure: Any, on_running: Any) -> None:
        self.on_completion_hooks = list(on_completion or ())
        self.on_failure_hooks = list(on_failure or ())
        self.on_running_hooks = list(on_running or ())

    def _hook_options(self) -> dict[str, list[Callable]]:
        """The hooks as decorator options (copies), for `with_options`."""
        return {
            "on_completion": list(self.on_completion_hooks), "on_failure": list(self.on_failure_hooks),
            "on_running": list(self.on_running_hooks),
        }

    def on_completion(self, fn: Callable) -> Callable:
        """Add `fn` to the hooks called when a run completes."""
        self.on_completion_hooks.append(fn)
        return fn

    def on_failure(self, fn: Callable) -> Callable:
        """Add `fn` to the hooks called when a run fails or crashes."""
        self.on_failure_hooks.append(fn)
        return fn

    def on_running(self, fn: Callable) -> Callable:
        """Add `fn` to the hooks called when a run enters Running."""
        self.on_running_hooks.append(fn)
        return fn


ReportError = Callable[[str], None]
"""Where a hook's failure is told (one line); the default logs it on `dagrun.hooks`."""


def call_hooks(
    hooks: Sequence[Callable], owner: Any, record: Any, state: State, report_error: ReportError | None = None,
) -> None:
    """Call each hook as `hook(owner, record, state)`; an async hook's coroutine is run to its
    end, as Prefect does. A hook that raises is reported and the next one runs: a hook never
    changes the run's outcome."""
    for hook in hooks:
        try:
            result = hook(owner, record, state)
            if inspect.iscoroutine(result):
                run_on_task_loop(result)
        except Exception as exc:  # noqa: BLE001 - a hook must never change the run's outcome
            line = f"Hook {hook_name(hook)!r} of {owner.name!r} failed: {type(exc).__name__}: {exc}"
            if report_error is None:
                logger.exception(line)
            else:
                report_error(line)


def hook_name(hook: Callable) -> str:
    """A hook's name for messages; a `functools.partial` is named by the function it wraps."""
    return getattr(hook, "__name__", None) or getattr(getattr(hook, "func", None), "__name__", None) or repr(hook)


def with_running_hooks(fn: Callable, task: Any, record: TaskRunRecord, report_error: ReportError) -> Callable:
    """`fn` (one attempt of a task run), calling the task's `on_running` hooks before each
    attempt, with a `Running` state whose start time is the attempt's."""
    hooks = task.on_running_hooks
    if not hooks:
        return fn

    def attempt(*args: object, **kwargs: object) -> object:
        now = time.time()
        call_hooks(hooks, task, record, State(StateType.RUNNING, timestamp=now, start_time=now), report_error)
        return fn(*args, **kwargs)

    return attempt
