"""The states a task run or flow run passes through, and the `State` value that records one.

    Pending -> Running -> (Retrying -> Running)* -> Completed | Failed | Crashed
    Pending -> Cached                      (a cache hit never takes a worker slot)
    Pending -> NotRun                      (an upstream task failed)
    any non-final -> Cancelled             (Ctrl-C, `dagrun runs cancel`)
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

_NO_RESULT = object()


class StateType(enum.Enum):
    PENDING = "Pending"
    """Submitted (or about to be) and waiting for its inputs or a worker slot."""
    RUNNING = "Running"
    """An attempt is executing on a worker."""
    RETRYING = "Retrying"
    """An attempt failed and the retry policy scheduled another after a delay."""
    COMPLETED = "Completed"
    """Finished and returned a value."""
    CACHED = "Cached"
    """Finished by reusing a stored result instead of running."""
    FAILED = "Failed"
    """User code raised (after retries), or returned a value that cannot be serialized."""
    CRASHED = "Crashed"
    """The infrastructure failed: a worker died, the scheduler connection was lost."""
    CANCELLED = "Cancelled"
    """Stopped on request before finishing."""
    NOT_RUN = "NotRun"
    """Never executed because an upstream task did not complete."""

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        StateType.COMPLETED,
        StateType.CACHED,
        StateType.FAILED,
        StateType.CRASHED,
        StateType.CANCELLED,
        StateType.NOT_RUN,
    }
)


@dataclass(frozen=True, slots=True, eq=False)
class State:
    """One state of a run: its kind, a message, when it was entered, and its outcome.

    | attribute / method | meaning                                                  |
    |--------------------|----------------------------------------------------------|
    | `.name`            | "Completed", "Failed", ... (the `StateType` value)        |
    | `.message`         | human-readable detail ("Retry 1/3 after ...")             |
    | `.timestamp`       | when the state was entered (epoch seconds)               |
    | `.result()`        | the value, or raises the stored exception                 |
    | `.is_completed()`  | true for Completed and Cached                             |
    """

    type: StateType
    message: str = ""
    timestamp: float = field(default_factory=time.time)
    data: Any = _NO_RESULT
    exception: BaseException | None = None
    start_time: float | None = None
    end_time: float | None = None

    @property
    def name(self) -> str:
        return self.type.value

    def is_completed(self) -> bool:
        return self.type in (StateType.COMPLETED, StateType.CACHED)

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_final(self) -> bool:
        return self.type.is_final

    def result(self, raise_on_failure: bool = True) -> Any:
        """Return the run's value; for a failed state raise its exception (or return it)."""
        if self.exception is not None:
            if raise_on_failure:
                raise self.exception
            return self.exception
        if self.data is _NO_RESULT:
            if raise_on_failure and not self.is_completed():
                raise ValueError(f"A {self.name} state has no result")
            return None
        return self.data

    def __repr__(self) -> str:
        message = f", message={self.message!r}" if self.message else ""
        return f"{self.name}({message.lstrip(', ')})" if message else f"{self.name}()"


# Prefect's state constructors: a flow returns `Completed(...)` / `Failed(...)` to choose its
# final state; `Failed(data=exc)` carries the exception as Prefect's does.
def Pending(message: str = "") -> State:  # noqa: N802 - Prefect's name
    return State(StateType.PENDING, message=message)


def Running(message: str = "") -> State:  # noqa: N802 - Prefect's name
    return State(StateType.RUNNING, message=message)


def Completed(message: str = "", data: Any = _NO_RESULT) -> State:  # noqa: N802 - Prefect's name
    return State(StateType.COMPLETED, message=message, data=data)


def Failed(message: str = "", data: Any = _NO_RESULT, exception: BaseException | None = None) -> State:  # noqa: N802
    if exception is None and isinstance(data, BaseException):
        exception, data = data, _NO_RESULT
    return State(StateType.FAILED, message=message, data=data, exception=exception)


def Crashed(message: str = "", exception: BaseException | None = None) -> State:  # noqa: N802 - Prefect's name
    return State(StateType.CRASHED, message=message, exception=exception)


def Cancelled(message: str = "") -> State:  # noqa: N802 - Prefect's name
    return State(StateType.CANCELLED, message=message)
