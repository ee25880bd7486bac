"""`.submit()` and `.map()` of a task inside a running task: nested runs in that process.

Prefect 3 runs a task's own `.submit()` / `.map()` calls on a thread pool task runner in the
process where the task runs; so does dagrun, on a Dask worker, on the thread executor or in
process. Each `.submit()` / `.map()` call gets a small pool of its own (one thread per call, up
to min(32, CPUs + 4) for a map), whose threads end once its calls are done. The calls of one
`.map()` never wait for each other, and a call only waits for runs submitted before it, so
these pools cannot starve one another; they are not the worker's own threads, so a task that
waits for its nested runs on a worker with one thread does not deadlock it.

A nested run is the task run machinery of a direct call inside a task (`Task._run_here`):
retries, timeout, `log_prints`; its log lines go to the log of the task run that submitted it.
It is not recorded in the run history as a task run of its own (the flow run's history holds
the runs the flow submitted). Futures and `wait_for=` edges in its arguments are waited for in
its thread, before it runs; a failed upstream fails it with the upstream's exception.

Its future is a `TaskFuture` (so `dagrun.futures.wait`, `as_completed`, `FutureList` and using
it as a value work as for a flow's futures) whose tracker is a `NestedRuns`.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from dagrun.futures import TaskFuture, allow_failure, unmapped
from dagrun.nested import instances_in, replaced
from dagrun.states import State, StateType

_MAX_THREADS = min(32, (os.cpu_count() or 1) + 4)  # Python's ThreadPoolExecutor default


@dataclasses.dataclass(eq=False)
class NestedRun:
    """One nested run: its name and the future of its outcome."""

    id: str
    name: str
    outcome: concurrent.futures.Future
    seen: bool = False
    direct: bool = False

    @property
    def state(self) -> State:
        outcome = self.outcome
        if not outcome.done():
            return State(StateType.RUNNING if outcome.running() else StateType.PENDING)
        error = outcome.exception()
        if error is not None:
            return State(StateType.FAILED, message=f"{type(error).__name__}: {error}", exception=error)
        return State(StateType.COMPLETED, data=outcome.result())


class NestedRuns:
    """The nested runs of one `.submit()` / `.map()` call, and the tracker of their futures."""

    def __init__(self, run_here: Callable[[Any, tuple, dict, str], Any]) -> None:
        self._run_here = run_here  # (task, args, kwargs, run id) -> value, in this thread

    # ---------------------------------------------------------------- submitting
    def submit(self, task: Any, args: tuple, kwargs: dict, wait_for: Iterable[Any] = ()) -> TaskFuture:
        return self.submit_many(task, [(args, kwargs)], wait_for)[0]

    def submit_many(self, task: Any, calls: list[tuple[tuple, dict]], wait_for: Iterable[Any] = ()) -> list[TaskFuture]:
        wait_for = tuple(wait_for or ())
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(len(calls), _MAX_THREADS)), thread_name_prefix=f"dagrun-nested-{task.name}"
        )
        futures = []
        try:
            for args, kwargs in calls:
                run_id = uuid.uuid4().hex
                context = contextvars.copy_context()  # the submitting task run's, one copy per call
                outcome = pool.submit(context.run, self._call, task, args, kwargs, wait_for, run_id)
                futures.append(TaskFuture(NestedRun(run_id, f"{task.name}-{run_id[:6]}", outcome), self))
        finally:
            pool.shutdown(wait=False)  # its threads end once the calls submitted are done
        return futures

    def _call(self, task: Any, args: tuple, kwargs: dict, wait_for: tuple, run_id: str) -> Any:
        for item in wait_for:
            tolerated = type(item) is allow_failure
            for upstream in _futures_in(item.value if tolerated else item):
                if not upstream.wait().is_completed() and not tolerated:
                    upstream.result()  # raises the upstream's exception
        return self._run_here(task, _values(args), _values(kwargs), run_id)

    def state_of_call(self, future: TaskFuture) -> State:
        """What `.submit(..., return_state=True)` returns: the final state."""
        return future.wait()

    # ---------------------------------------------------------------- as a tracker
    def current_state(self, run: NestedRun) -> State:
        return run.state

    def wait_for(self, run: NestedRun, timeout: float | None = None) -> State:
        concurrent.futures.wait([run.outcome], timeout)
        return run.state

    def result(self, run: NestedRun, *, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        state = self.wait_for(run, timeout)
        if not state.is_final():
            raise TimeoutError(f"Task run '{run.name}' did not finish within {timeout} s")
        return state.result(raise_on_failure=raise_on_failure)

    def results(self, futures: list[TaskFuture]) -> list[Any]:
        return [future.result() for future in futures]

    def failure_of(self, run: NestedRun) -> BaseException:
        return run.state.exception or RuntimeError(f"Task run '{run.name}' did not complete")

    def wait_any(self, runs: list[NestedRun], timeout: float | None) -> None:
        concurrent.futures.wait([run.outcome for run in runs], timeout, concurrent.futures.FIRST_COMPLETED)

    def forget(self, run: NestedRun) -> None:
        """Nothing to release: the outcome goes with its future."""


def _futures_in(value: Any) -> list[TaskFuture]:
    found: list[TaskFuture] = []
    instances_in(value, TaskFuture, found)
    return found


def _values(value: Any) -> Any:
    """`value` with the futures in it replaced by their values (inside `allow_failure(...)`,
    a failed upstream gives its exception, as in a flow)."""
    value = replaced(value, unmapped, lambda wrapped: wrapped.value)
    value = replaced(value, allow_failure, lambda wrapped: replaced(
        wrapped.value, TaskFuture, lambda future: future.result(raise_on_failure=False)
    ))
    return replaced(value, TaskFuture, lambda future: future.result())
