"""What happens to a run, told to whoever follows it: the one interface the engine publishes
through.

The engine of a flow run (and of its subflow runs) publishes every fact to one `Observers`,
which hands it to each subscriber: the run history (`dagrun.recorder`), terminal progress
(`dagrun.progress`), state hooks and notifiers (`dagrun.hooks`). A subscriber implements
`RunObserver`, overriding only the methods it needs; the others do nothing.

| method                 | when                                              | carries                         |
|------------------------|---------------------------------------------------|---------------------------------|
| `flow_run_started`     | a flow run or subflow run begins                  | `FlowRunStarted`                |
| `flow_run_state`       | a flow run retries, runs again, or ends           | `FlowRunStateChanged`           |
| `task_run_created`     | a task call is made (state `Pending`)             | the `TaskRun` record            |
| `task_runs_dispatched` | task runs were sent to the executor (one batch)   | their `TaskRun` records         |
| `task_events`          | workers report: started (worker, attempt), an     | `dagrun.task_events` records    |
|                        | attempt failed / retrying, finished (result size  |                                 |
|                        | and content hash)                                 |                                 |
| `task_attempt_lost`    | an attempt ended with its worker: retrying        | the `TaskRun`, the reason       |
| `task_run_state`       | a task run reached its final state: completed,    | the `TaskRun`, its `State`      |
|                        | cached, failed, crashed, not run, cancelled       |                                 |
| `log`                  | a log line of the run or one of its task runs     | `dagrun.logs.LogLine`           |

Per task run the engine publishes what it already holds (its `TaskRun` record, the `State`
it entered, the workers' records) rather than building a record per subscriber: these calls
are on the engine's hot path. Flow-level facts are frozen records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dagrun.logs import LogLine
from dagrun.states import State
from dagrun.task_events import TaskEvent

if TYPE_CHECKING:
    from dagrun.task_run_record import TaskRun


@dataclass(frozen=True, slots=True)
class FlowRunStarted:
    """A flow run began; `flow` is the `Flow` (its name, hooks and notifiers)."""

    flow_run_id: str
    flow_run_name: str
    flow: Any
    parameters: Mapping[str, Any]
    parent_flow_run_id: str | None
    executor: str
    address: str | None
    start_time: float


@dataclass(frozen=True, slots=True)
class FlowRunStateChanged:
    """The flow run `run` entered `state` (Retrying, Running again, or its final state);
    `failed_task` names the task run that failed first, if one did."""

    run: FlowRunStarted
    state: State
    failed_task: str | None = None


class RunObserver(Protocol):
    """A subscriber to what happens to runs; every method does nothing unless overridden.
    Called on the engine's thread, except `task_events` and `log` (any thread)."""

    def flow_run_started(self, event: FlowRunStarted) -> None:
        return None

    def flow_run_state(self, event: FlowRunStateChanged) -> None:
        return None

    def task_run_created(self, run: TaskRun, flow_run_id: str) -> None:
        return None

    def task_runs_dispatched(self, runs: Sequence[TaskRun]) -> None:
        return None

    def task_events(self, events: Sequence[TaskEvent]) -> None:
        return None

    def task_attempt_lost(self, run: TaskRun, error: str) -> None:
        return None

    def task_run_state(self, run: TaskRun, state: State, flow_run_id: str) -> None:
        return None

    def log(self, line: LogLine) -> None:
        return None


_METHODS = (
    "flow_run_started", "flow_run_state", "task_run_created", "task_runs_dispatched", "task_events",
    "task_attempt_lost", "task_run_state", "log",
)


class Observers(RunObserver):
    """Hands each fact to every subscriber that overrides the method for it, in order; a
    fact nobody listens to costs one call. `wants(name)` says whether anyone listens."""

    def __init__(self, observers: Iterable[RunObserver]) -> None:
        self._observers = tuple(observers)
        for name in _METHODS:
            listeners = tuple(
                getattr(observer, name) for observer in self._observers
                if getattr(type(observer), name) is not getattr(RunObserver, name)
            )
            if len(listeners) == 1:
                setattr(self, name, listeners[0])
            elif listeners:
                setattr(self, name, _fan_out(listeners))

    def wants(self, name: str) -> bool:
        """Whether a subscriber overrides method `name` (else publishing it can be skipped)."""
        return name in self.__dict__


def _fan_out(listeners: tuple) -> Any:
    def publish(*args: Any) -> None:
        for listener in listeners:
            listener(*args)

    return publish
