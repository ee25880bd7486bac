"""The flow body's view of its task runs: direct calls as steps, waiting for any of several
runs, and which failures the body never looked at. A mixin of `TaskRunTracker`.

Policy (Prefect's order of side effects, with dagrun's concurrency where Prefect has none)
- A direct call whose future the body discards (`create_table()` as a statement) is a step:
  the next task call (direct, `.submit`, `.map`, a subflow) first waits for it, and if it did
  not complete, its exception (with the task's name in a note) raises there, in the body.
  A step still pending when the body returns is settled the same way.
- Futures the body keeps run concurrently; `.submit()` and `.map()` calls are never steps.
- A failure counts as looked at once the body asked for the outcome (`.state`, `.result`,
  `.wait`, `wait()`, `as_completed`, `return_state=True`, `allow_failure`, using the value);
  see `dagrun.flow_outcome` for what an unlooked failure does to the flow's final state.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dagrun.states import State, StateType
from dagrun.task_run_record import failed_upstream

if TYPE_CHECKING:
    from dagrun.futures import TaskFuture
    from dagrun.task_run_record import TaskRun


class TaskSteps:
    """Steps and waits over the tracker's runs (`self` is the `TaskRunTracker`)."""

    step: TaskRun | None = None  # the discarded direct call that later calls wait for

    def call(self: Any, task: Any, args: tuple, kwargs: dict, wait_for: Iterable[Any], discarded: bool) -> TaskFuture:
        """A direct task call in the flow body; `discarded`: its result is thrown away."""
        future = self.submit(task, args, kwargs, wait_for)
        run = future._run
        run.direct = True
        if discarded:
            self.step = run
        return future

    def before_call(self: Any) -> None:
        """Before any task call of the body: a cancel request raises, a pending step is settled."""
        self.cancellation.check()
        if self.step is not None:
            self.settle_step()

    def state_of_call(self: Any, future: TaskFuture) -> State:
        """What a call with `return_state=True` returns: its final state, with the value."""
        state = future.wait()
        return dataclasses.replace(state, data=future.result()) if state.is_completed() else state

    def settle_step(self: Any) -> None:
        """Wait for the pending step, if any; raise its failure in the caller (the body)."""
        run, self.step = self.step, None
        if run is None:
            return
        state = self.wait_for(run)
        if state.is_final() and not state.is_completed() and state.type is not StateType.CANCELLED:
            raise self.failure_of(run)

    def failure_of(self: Any, run: TaskRun) -> BaseException:
        """What using a run that did not complete raises in the body: its exception; for a run
        that did not run because a direct call upstream failed, that call's own exception (in
        Prefect that call would have raised first). The runs count as looked at."""
        run.seen = True
        root = run
        while root.state.type is StateType.NOT_RUN:
            cause = failed_upstream(root)
            if cause is None:
                break
            root = cause
        if root is not run and root.direct and root.state.exception is not None:
            root.seen = True
            return root.state.exception
        return run.state.exception or RuntimeError(run.state.message)

    def wait_any(self: Any, runs: list[TaskRun], timeout: float | None) -> None:
        """Block until one of `runs` may have become final (or `timeout` passed), then sweep."""
        handles = [run.handle for run in runs if run.handle is not None and not run.state.is_final()]
        if len(handles) < len(runs):  # some wait for upstream results: any run may move them
            handles += [run.handle for run in self._active]
        if handles:
            self.session.wait_any(handles, self._remaining(None if timeout is None else time.monotonic() + timeout))
        self.timeout.check()
        self.cancellation.check()
        self.sweep()

    def unlooked_failures(self: Any) -> tuple[TaskRun | None, list[TaskRun]]:
        """(the first direct call or crashed run that failed unlooked, every unlooked failed
        `.submit()` / `.map()` run), in submission order."""
        failed: list[TaskRun] = []
        for run in self.runs:
            kind = run.state.type
            if run.seen or kind not in _FAILED_KINDS:
                continue
            if run.direct or kind is StateType.CRASHED:
                return run, failed
            if kind is StateType.FAILED:
                failed.append(run)
        return None, failed


_FAILED_KINDS = frozenset({StateType.FAILED, StateType.CRASHED, StateType.NOT_RUN})
