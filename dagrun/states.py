"""The states a task run or flow run passes through, and the `State` value that records one.

    Pending -> Running -> (Retrying -> Running)* -> Completed | Failed | Crashed
    Pending -> Cached                      (a cache hit never takes a worker slot)
    Pending -> NotRun                      (an upstream task failed)
    any non-final -> Cancelled             (Ctrl-C, `dagrun runs cancel`)
    any non-final -> Crashed               (a worker or the driver died)
    Running <-> Paused                     (held on request)

Every state change of a task run or flow run goes through `transition`, which checks it
against the transition table at the end of this module (`TASK_RUN_TRANSITIONS`,
`FLOW_RUN_TRANSITIONS`) and raises `IllegalTransition` for a move the table does not allow.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
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
    PAUSED = "Paused"
    """Held on request; resumes as `Running` (or ends)."""

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
    | `.name`            | "Completed", "Failed", ... (the `StateType` value), or a   |
    |                    | custom name (`Completed(name="Skipped")`, as in Prefect)  |
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
    # Prefect's custom state name: shown as `.name`; the type alone drives transitions, the
    # history's state column and `is_*()` checks.
    custom_name: str | None = None

    @property
    def name(self) -> str:
        return self.custom_name or self.type.value

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
        fields = [f"message={self.message!r}"] if self.message else []
        if self.custom_name and self.custom_name != self.type.value:
            fields.append(f"type={self.type.value}")  # as Prefect shows a custom-named state
        return f"{self.name}({', '.join(fields)})"


# ---------------------------------------------------------------- the transition table
_P, _RUN, _RETRY, _PAUSE = StateType.PENDING, StateType.RUNNING, StateType.RETRYING, StateType.PAUSED
_DONE, _HIT, _FAIL, _CRASH = StateType.COMPLETED, StateType.CACHED, StateType.FAILED, StateType.CRASHED
_CANCEL, _NOT_RUN = StateType.CANCELLED, StateType.NOT_RUN
_ENDS = frozenset({_DONE, _FAIL, _CRASH, _CANCEL})  # how an attempt that started can end
Table = Mapping[StateType, frozenset[StateType]]
"""A transition table: for each state, the states a run may move to from it."""

TASK_RUN_TRANSITIONS: Table = MappingProxyType({
    # Pending may skip to any state: the history writes a worker's batch that starts and ends
    # an attempt as its end only, and the engine classifies an outcome without a Running.
    _P: frozenset({_RUN, _RETRY, _PAUSE, _HIT, _NOT_RUN}) | _ENDS,
    # Running -> Running: the next attempt, or the same one started again on another worker.
    # NotRun: resubmitted (its worker died) after an upstream run ended without completing.
    _RUN: frozenset({_RUN, _RETRY, _PAUSE, _NOT_RUN}) | _ENDS,
    _RETRY: frozenset({_RUN, _RETRY, _PAUSE, _NOT_RUN}) | _ENDS,
    _PAUSE: frozenset({_RUN, _CANCEL, _CRASH, _FAIL}),
    # Final states end a run, but for these explicit rules. Completed -> Running: its result
    # was lost with its worker or the scheduler and is computed again; -> Crashed: it could
    # not be computed again (the lost attempts used up its retries).
    _DONE: frozenset({_RUN, _CRASH}),
    _HIT: frozenset({_RUN}),  # its stored entry failed verification when read: computed after all
    _FAIL: frozenset(),
    _CRASH: frozenset(),
    _CANCEL: frozenset(),
    _NOT_RUN: frozenset(),
})
"""For each state of a task run, the states it may move to (a repeat of a final state is no
move: see `transition`)."""

FLOW_RUN_TRANSITIONS: Table = MappingProxyType({
    _P: frozenset({_RUN, _FAIL, _CRASH, _CANCEL}),  # a deployment's run that never started
    _RUN: frozenset({_RETRY, _PAUSE}) | _ENDS,
    _RETRY: frozenset({_RUN}) | _ENDS,
    _PAUSE: frozenset({_RUN, _FAIL, _CRASH, _CANCEL}),
    _DONE: frozenset(),
    _FAIL: frozenset(),
    # A driver presumed lost (its heartbeat lease expired) that was only slow records its
    # own end after all.
    _CRASH: frozenset(_ENDS - {_CRASH}),
    _CANCEL: frozenset(),
})
"""For each state of a flow run, the states it may move to. Flow runs are never `Cached` or
`NotRun`."""


class IllegalTransition(RuntimeError):
    """A run was moved between two states the transition table does not allow: a bug in
    dagrun, never the user's doing. The message names the run, both states and the moves
    the table allows from the current one."""

    def __init__(self, run: object, current: StateType, new: StateType, table: Table) -> None:
        super().__init__(run, current, new)
        self.run, self.current, self.new, self.allowed = str(run), current, new, table.get(current, frozenset())

    def __str__(self) -> str:
        allowed = ", ".join(sorted(state.value for state in self.allowed)) or "none, it is final"
        return f"Illegal state transition of {self.run}: {self.current.value} -> {self.new.value} (allowed from {self.current.value}: {allowed})"


def transition(
    current: State, new: State, *, run: object, table: Table = TASK_RUN_TRANSITIONS,
) -> State:
    """The state `run` is in after moving from `current` to `new`: `new` when the table allows
    the move; `current` when `new` repeats a final state (idempotent: nothing to record, the
    first one stands). Raises `IllegalTransition` otherwise, naming the run by `str(run)`
    ("task run 'extract-0'"), built only then."""
    if new.type in table[current.type]:  # the common case first: one lookup per state change
        return new
    return new if check_transition(current.type, new.type, run=run, table=table) else current


def check_transition(
    current: StateType, new: StateType, *, run: object, table: Table = TASK_RUN_TRANSITIONS,
) -> bool:
    """True when `run` moves from `current` to `new`; False when `new` repeats `current`, a
    final state (nothing changes). Raises `IllegalTransition` for a move the table forbids."""
    if new in table[current]:
        return True
    if new is current and current.is_final:
        return False
    raise IllegalTransition(run, current, new, table)


def check_report(current: StateType, reported: StateType, *, run: object) -> bool:
    """Whether a task run's history moves to `reported` from `current`, the state it shows.
    Two sources report a run's end, its worker and the engine, either first: a second final
    state the table does not allow after the first (a worker's late report, the engine's
    classification of an end its worker already reported) fills in fields and adds no
    state, the first stands (False). Any other move is checked as by `check_transition`."""
    if current.is_final and reported.is_final and reported not in TASK_RUN_TRANSITIONS[current]:
        return False
    return check_transition(current, reported, run=run)


# Prefect's state constructors: a flow or task returns `Completed(...)` / `Failed(...)` to
# choose its final state; `Failed(data=exc)` carries the exception as Prefect's does; `name=`
# gives the state a custom name with the type's meaning (`Completed(name="Skipped")`).
def Pending(message: str = "", name: str | None = None) -> State:  # noqa: N802 - Prefect's name
    return State(StateType.PENDING, message=message, custom_name=name)


def Running(message: str = "", name: str | None = None) -> State:  # noqa: N802 - Prefect's name
    return State(StateType.RUNNING, message=message, custom_name=name)


def Completed(message: str = "", data: Any = _NO_RESULT, name: str | None = None) -> State:  # noqa: N802
    return State(StateType.COMPLETED, message=message, data=data, custom_name=name)


def Failed(  # noqa: N802 - Prefect's name
    message: str = "", data: Any = _NO_RESULT, exception: BaseException | None = None, name: str | None = None,
) -> State:
    if exception is None and isinstance(data, BaseException):
        exception, data = data, _NO_RESULT
    return State(StateType.FAILED, message=message, data=data, exception=exception, custom_name=name)


def Crashed(message: str = "", exception: BaseException | None = None, name: str | None = None) -> State:  # noqa: N802
    return State(StateType.CRASHED, message=message, exception=exception, custom_name=name)


def Cancelled(message: str = "", name: str | None = None) -> State:  # noqa: N802 - Prefect's name
    return State(StateType.CANCELLED, message=message, custom_name=name)
