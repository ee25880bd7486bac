"""`TaskFuture`: the handle a task call returns inside a running flow.

A future is not a value: using it as one (truth test, iteration, arithmetic, comparison)
raises a `TypeError` that says to call `.result()`. Passing it to another task is how a
dependency is made; the value then moves worker-to-worker without visiting the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dagrun.errors import FutureUsedAsValueError
from dagrun.states import State

if TYPE_CHECKING:
    from dagrun.task_runs import TaskRun, TaskRunTracker

R = TypeVar("R")


class unmapped:  # noqa: N801 - named like Prefect's, used as a marker in calls
    """Wrap an argument of `task.map(...)` that is passed whole to every call."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class TaskFuture(Generic[R]):
    """The eventual result of one task run.

    | call                                         | returns                                |
    |----------------------------------------------|----------------------------------------|
    | `.result(timeout=None, raise_on_failure=True)` | the value (raises the task's error)  |
    | `.wait(timeout=None)`                        | the `State` once final (or current)    |
    | `.state`                                     | the current `State`, without blocking  |
    | `.exception()`                               | the error after waiting, or None       |
    | `.done()`                                    | whether the run reached a final state  |
    """

    __slots__ = ("_run", "_tracker", "__weakref__")

    def __init__(self, run: TaskRun, tracker: TaskRunTracker) -> None:
        self._run = run
        self._tracker = tracker

    @property
    def task_run_id(self) -> str:
        return self._run.id

    @property
    def name(self) -> str:
        """The task run's name, e.g. `extract-0`."""
        return self._run.name

    @property
    def state(self) -> State:
        return self._tracker.current_state(self._run)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        return self._tracker.result(self._run, timeout=timeout, raise_on_failure=raise_on_failure)

    def wait(self, timeout: float | None = None) -> State:
        return self._tracker.wait_for(self._run, timeout=timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self.wait(timeout).exception

    def done(self) -> bool:
        return self.state.is_final()

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
        return f"TaskFuture({self._run.name!r}, state={self._run.state.name})"

    def _used_as_value(self, *args: Any, **kwargs: Any) -> Any:
        raise FutureUsedAsValueError(
            f"TaskFuture {self._run.name!r} is not a value: call .result() to wait for the task "
            f"and get its value, e.g. `{self._run.task.name}(...).result()`"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TaskFuture):
            return self is other
        return self._used_as_value()

    def __ne__(self, other: object) -> bool:
        if isinstance(other, TaskFuture):
            return self is not other
        return self._used_as_value()

    __hash__ = object.__hash__
    __bool__ = __iter__ = __len__ = __contains__ = __getitem__ = _used_as_value
    __lt__ = __le__ = __gt__ = __ge__ = _used_as_value
    __int__ = __float__ = __index__ = __complex__ = _used_as_value
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _used_as_value
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _used_as_value
    __mod__ = __rmod__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = _used_as_value
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = _used_as_value
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _used_as_value
    __neg__ = __pos__ = __abs__ = __invert__ = _used_as_value


# Prefect's name for the same thing: `from prefect.futures import PrefectFuture` ports unchanged.
PrefectFuture = TaskFuture
