"""`TaskFuture`: the handle a task call returns inside a running flow, standing in for its value.

Passing a future to another task is how a dependency is made; the value then moves
worker-to-worker without visiting the driver. Using it as a value (`if x:`, `x + 1`, `print(x)`,
see `dagrun.future_values`) waits for the task in the driver and uses its result, so Prefect
code where a direct call returns the value runs unchanged.

Also here, with Prefect's names: `unmapped` and `allow_failure` (argument annotations),
`FutureList` (what `task.map` returns), `wait(futures, timeout)` and `as_completed(futures)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from dagrun.future_values import StandsForValue
from dagrun.nested import WalkedList
from dagrun.states import State

if TYPE_CHECKING:
    from dagrun.task_runs import TaskRun, TaskRunTracker

R = TypeVar("R")
_UNSET: Any = object()


class unmapped:  # noqa: N801 - named like Prefect's, used as a marker in calls
    """Wrap an argument of `task.map(...)` that is passed whole to every call."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def unwrap(self) -> Any:
        return self.value


class allow_failure:  # noqa: N801 - named like Prefect's, used as a marker in calls
    """Wrap an upstream future (or a list of them) passed to a task: the task runs even if the
    upstream failed, and receives the upstream's exception in place of its value (as in
    Prefect). Works in `wait_for=[...]` too. The upstream's failure is then the flow's to handle."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def unwrap(self) -> Any:
        return self.value


class TaskFuture(StandsForValue, Generic[R]):
    """The eventual result of one task run; used as a value, it is that result.

    | call                                         | returns                                |
    |----------------------------------------------|----------------------------------------|
    | `.result(timeout=None, raise_on_failure=True)` | the value (raises the task's error)  |
    | `.wait(timeout=None)`                        | the `State` once final (or current)    |
    | `.state`                                     | the current `State`, without blocking  |
    | `.exception()`                               | the error after waiting, or None       |
    | `.done()`                                    | whether the run reached a final state  |
    | `.task_run_id`, `.task_run_name`             | the run's id and name (`extract-0`)    |

    `.state`, `.result(...)`, `.wait()` and `.exception()` mean the flow looked at the outcome:
    a failure seen that way is the flow's to handle and does not fail the flow run by itself.
    `repr()` of a future from a direct call is its value's (as a Prefect user printing a list
    of results expects); of a `.submit()` / `.map()` future, `TaskFuture('name-0', state=...)`.
    """

    __slots__ = ("_run", "_tracker", "_value", "__weakref__")

    def __init__(self, run: TaskRun, tracker: TaskRunTracker) -> None:
        self._run = run
        self._tracker = tracker
        self._value = _UNSET

    @property
    def task_run_id(self) -> str:
        return self._run.id

    @property
    def task_run_name(self) -> str:
        """The task run's name, e.g. `extract-0`."""
        return self._run.name

    @property
    def state(self) -> State:
        self._run.seen = True
        return self._tracker.current_state(self._run)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        self._run.seen = True
        return self._tracker.result(self._run, timeout=timeout, raise_on_failure=raise_on_failure)

    def wait(self, timeout: float | None = None) -> State:
        self._run.seen = True
        return self._tracker.wait_for(self._run, timeout=timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self.wait(timeout).exception

    def done(self) -> bool:
        return self._tracker.current_state(self._run).is_final()

    @property  # type: ignore[misc] - a proxy's class, as wrapt's ObjectProxy reports it
    def __class__(self) -> type:
        """The class of the value, for `isinstance(add_one(1), int)` on a direct call in a sync
        flow body (Prefect's direct call returns the value). Python asks `__class__` only
        when `type(future)` is not the class checked, so `isinstance(f, TaskFuture)` never
        waits. A `.submit()` / `.map()` future, or any future used where an event loop runs
        (asyncio probes `__class__` in `gather`, `isfuture`, `iscoroutine`), is a `TaskFuture`
        without waiting. dagrun's own code tells futures by `type(x) is TaskFuture` first."""
        if self._run.direct and asyncio._get_running_loop() is None:
            return type(self._value_now())
        return TaskFuture

    def _value_now(self) -> Any:
        """The value, fetched once; a run that did not complete raises as Prefect's direct call
        would have (`TaskRunTracker.failure_of`)."""
        value = self._value
        if value is _UNSET:
            if not self.wait().is_completed():
                raise self._tracker.failure_of(self._run)
            value = self._value = self.result()
        return value

    def __await__(self) -> Any:
        """`await future` gives the value (async flows), without blocking the event loop."""
        from dagrun.async_support import future_value

        return future_value(self).__await__()

    def __del__(self) -> None:
        # Once nobody can ask for the value again, let Dask forget it (bounded memory).
        try:
            self._tracker.forget(self._run)
        except Exception:  # noqa: BLE001 - interpreter shutdown, nothing to release
            pass

    def __repr__(self) -> str:
        run = self._run
        if run.direct:
            try:
                if self._tracker.wait_for(run).is_completed():
                    return repr(self._value_now())
            except Exception:  # noqa: BLE001 - a repr never raises: the run is named instead
                pass
        return f"TaskFuture({run.name!r}, state={run.state.name})"


class FutureList(WalkedList, Generic[R]):
    """The futures of a `task.map(...)`, in call order (a list, as Prefect's PrefectFutureList)."""

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every run to finish (at most `timeout` seconds; does not raise on timeout)."""
        wait(self, timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """The values in call order; the first failure (in call order) raises, unless
        `raise_on_failure=False` (a failed run's value is then its exception)."""
        done, not_done = wait(self, timeout=timeout)
        if not_done:
            raise TimeoutError(f"Timed out waiting for all futures to complete within {timeout} seconds")
        trackers = {id(future._tracker): future._tracker for future in self}
        if raise_on_failure and len(trackers) == 1:
            return next(iter(trackers.values())).results(list(self))  # one round trip for all
        return [future.result(raise_on_failure=raise_on_failure) for future in self]


class DoneAndNotDoneFutures(NamedTuple):
    """What `wait` returns: the futures that finished, and those that had not by the timeout."""

    done: set[TaskFuture]
    not_done: set[TaskFuture]


def wait(futures: Iterable[TaskFuture], timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Wait until every future is final or `timeout` seconds passed (Prefect's `wait`); the
    flow has then looked at their outcomes, so a failure among them does not fail the run."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout}")
    deadline = None if timeout is None else time.monotonic() + timeout
    done: set[TaskFuture] = set()
    not_done: set[TaskFuture] = set()
    for future in set(futures):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        (done if future.wait(remaining).is_final() else not_done).add(future)
    return DoneAndNotDoneFutures(done, not_done)


def as_completed(futures: Iterable[TaskFuture], timeout: float | None = None) -> Iterator[TaskFuture]:
    """Yield each future once it is final, finished ones first (Prefect's `as_completed`).
    Past `timeout` seconds, raises `TimeoutError` naming how many are unfinished."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout}")
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(dict.fromkeys(futures))  # unique, in the given order
    total = len(pending)
    for future in pending:
        future._run.seen = True  # the flow looks at each outcome: a failure is its to handle
    while pending:
        finished = [future for future in pending if future.done()]
        if finished:
            yielded = set(map(id, finished))
            pending = [future for future in pending if id(future) not in yielded]
            yield from finished
            continue
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"{len(pending)} (of {total}) futures unfinished")
        pending[0]._tracker.wait_any([future._run for future in pending], remaining)


# Prefect's name for the same thing: `from prefect.futures import PrefectFuture` ports unchanged.
PrefectFuture = TaskFuture
