"""The events the engine reports to the run history, one small frozen record per fact.

The engine builds these on its hot path and hands them to `HistoryWriter.submit`; the writer's
thread applies them to the `HistoryStore` in batches. They carry plain values only (strings,
numbers, tuples, a parameters dict) so building one costs about a microsecond and nothing
about them ties the engine to a database.

| event            | recorded as                                                            |
|------------------|------------------------------------------------------------------------|
| `FlowRunStarted` | a new flow run in state `Running`; starts its heartbeat lease          |
| `FlowRunState`   | the flow run's new state; a final state sets `end_time`                |
| `TaskRunCreated` | a new task run in state `Pending`, with its upstream edges             |
| `TaskRunState`   | the task run's new state, plus whatever the optional fields say        |
| `TaskRunAttempt` | one attempt of a task run: its timing and, if it raised, its error     |
| `TaskRunDetails` | what a worker reported about a task run: fills fields, adds no state  |
| `LogLine`        | one log line of a flow run (and of a task run, if `task_run_id` is set)|
| `Heartbeat`      | the flow run's driver is alive at `timestamp` (the writer sends these) |

States are given by name (`"Running"`, `"Completed"`, ... as in `dagrun.states.StateType`);
a `StateType` member is accepted too. Timestamps are epoch seconds (`time.time()`).
`FlowRunStarted` implies the `Running` state and `TaskRunCreated` implies `Pending`: the
engine does not need to send those separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dagrun.states import FINAL_STATES, StateType

FINAL_STATE_NAMES = frozenset(state.value for state in FINAL_STATES)
ACTIVE_STATE_NAMES = tuple(state.value for state in StateType if state not in FINAL_STATES)
"""The states of a run that has not finished (Pending, Running, Retrying)."""
_CANONICAL_NAMES = MappingProxyType(
    {state.value.lower(): state.value for state in StateType}
    | {state.name.lower().replace("_", ""): state.value for state in StateType}
)


def state_name(state: str | StateType) -> str | None:
    """The canonical name of a state ("not_run", "NOT_RUN", StateType.NOT_RUN -> "NotRun").

    None when `state` names no state.
    """
    if isinstance(state, StateType):
        return state.value
    return _CANONICAL_NAMES.get(str(state).lower().replace("_", "").replace("-", ""))


@dataclass(frozen=True, slots=True)
class FlowRunStarted:
    """A flow run began in this driver process.

    `parameters` are stored as JSON with secrets masked (see `dagrun.history.parameters`);
    pass a dict the flow will not mutate, since the writer thread encodes it later.
    `lease_seconds` is how long the run may go without a heartbeat before it is `Crashed`.
    `deployment` and `slot` name the deployment and schedule slot that started the run.
    `process_space` and `process_start` let a reader on the driver's machine see that the
    driver died without waiting for the lease (see `dagrun.history.drivers`).
    """

    flow_run_id: str
    flow_name: str
    flow_run_name: str
    parameters: dict[str, Any]
    start_time: float
    parent_flow_run_id: str | None
    parent_task_run_id: str | None
    executor: str | None
    address: str | None
    host: str | None
    pid: int | None
    deployment: str | None = None
    slot: str | None = None
    lease_seconds: float = 30.0
    process_space: str | None = None
    process_start: float | None = None


@dataclass(frozen=True, slots=True)
class FlowRunState:
    """The flow run entered `state`; a final state also ends the run and its heartbeats."""

    flow_run_id: str
    state: str
    timestamp: float
    message: str = ""
    error: str | None = None
    traceback: str | None = None  # the user's view (see `dagrun.tracebacks`)
    full_traceback: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRunCreated:
    """A task run was submitted; `upstream` are the ids of the task runs it waits for."""

    task_run_id: str
    flow_run_id: str
    task_name: str
    task_run_name: str
    upstream: tuple[str, ...]
    cache_key: str | None
    created: float


@dataclass(frozen=True, slots=True)
class TaskRunState:
    """The task run entered `state`. Fields left as None keep their recorded value.

    Without `start_time` the first `Running` state's timestamp is used; without `end_time`
    a final state's timestamp is. A final state replaces the run's error (None clears it).
    """

    task_run_id: str
    state: str
    timestamp: float
    message: str = ""
    attempt: int | None = None
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    cache_hit: bool | None = None
    result_size: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    cache_key: str | None = None
    full_traceback: str | None = None  # `traceback` is the user's view (see `dagrun.tracebacks`)


@dataclass(frozen=True, slots=True)
class TaskRunAttempt:
    """One attempt of a task run (numbered from 1), with its error if it raised."""

    task_run_id: str
    attempt: int
    start_time: float | None
    end_time: float | None
    error: str | None = None
    traceback: str | None = None  # the user's view (see `dagrun.tracebacks`)
    full_traceback: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRunDetails:
    """Fields of a task run learnt after its final state was recorded (a worker's report that
    arrived late, the engine's fuller error): fills them in and adds no state. None keeps the
    recorded value; `start_time` is kept when already known, `end_time` replaced."""

    task_run_id: str
    worker: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    attempt: int | None = None
    result_size: int | None = None
    error: str | None = None
    traceback: str | None = None
    full_traceback: str | None = None
    message: str | None = None  # a returned state's message, when the worker's report came last


@dataclass(frozen=True, slots=True)
class LogLine:
    """A log line emitted by a flow run or, when `task_run_id` is set, by one of its tasks."""

    flow_run_id: str
    task_run_id: str | None
    timestamp: float
    level: int
    logger: str
    message: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The driver of the flow run was alive at `timestamp`; renews the run's lease."""

    flow_run_id: str
    timestamp: float


Event = (
    FlowRunStarted
    | FlowRunState
    | TaskRunCreated
    | TaskRunState
    | TaskRunAttempt
    | TaskRunDetails
    | LogLine
    | Heartbeat
)
"""Any event `HistoryStore.apply` accepts."""
