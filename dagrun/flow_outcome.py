"""The final state of a flow run whose body returned, after every task run is final.

Prefect 3's rules (DESIGN section 2, Flows), in order:
1. A returned `State` is the final state (`Completed(message=...)`, `Failed(...)`); returned
   futures or states (nested in list/tuple/dict/set too) fail the run when one of them did not
   complete.
2. A direct call that did not complete and that the body never looked at fails the run with
   the task's exception (Prefect's direct call would have raised in the body); a crashed run
   the body never looked at makes it `Crashed`.
3. A failed `.submit()` / `.map()` run that nothing resolved does not fail the run (Prefect ends
   it `Completed`), but one warning names those runs.
4. Otherwise `Completed`, with the returned value's futures replaced by their values.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dagrun.call_arguments import resolve_futures
from dagrun.errors import FailedStateError
from dagrun.futures import TaskFuture
from dagrun.nested import instances_in
from dagrun.states import State, StateType

if TYPE_CHECKING:
    from dagrun.task_runs import TaskRunTracker

_NAMED_AT_MOST = 10
_FLOW_FAILURES = frozenset({StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})


def final_state(tracker: TaskRunTracker, value: Any) -> State:
    """The flow run's state from its body's return `value` and its task runs' outcomes."""
    chosen = returned_state(value)  # first: returned futures count as looked at
    if chosen is not None and not chosen.is_completed():
        return chosen
    direct, unresolved = tracker.unlooked_failures()
    if direct is not None:
        state = direct.state
        kind = StateType.CRASHED if state.type is StateType.CRASHED else StateType.FAILED
        return State(kind, message=state.message, exception=state.exception)
    if unresolved:
        names = ", ".join(f"'{run.name}'" for run in unresolved[:_NAMED_AT_MOST])
        more = f" and {len(unresolved) - _NAMED_AT_MOST} more" if len(unresolved) > _NAMED_AT_MOST else ""
        tracker.log_flow(
            logging.WARNING,
            f"{len(unresolved)} failed task run(s) never resolved: {names}{more}; the flow run still "
            "completes, as in Prefect (use .result() or wait() on their futures to handle them)",
        )
    if chosen is not None:
        return chosen
    return State(StateType.COMPLETED, data=resolve_futures(value, tracker))


def returned_state(value: Any) -> State | None:
    """The state the return value chooses: a returned `State` as it is (a failed one without
    an exception gets `FailedStateError`), `Failed` when a returned future or state did not
    complete, else None."""
    if isinstance(value, State):
        if value.is_completed():
            return State(StateType.COMPLETED, message=value.message, data=value.data)
        # A flow run ends Failed, Crashed or Cancelled: a returned NotRun or Pending is a failure.
        kind = value.type if value.type in _FLOW_FAILURES else StateType.FAILED
        message = value.message or f"The flow returned a {value.name} state"
        return State(kind, message=message, data=value.data, exception=value.exception or FailedStateError(message))
    futures: list[TaskFuture] = []
    instances_in(value, TaskFuture, futures)
    states: list[State] = []
    instances_in(value, State, states)
    if not futures and not states:
        return None
    for future in futures:
        future._run.seen = True  # returned: the flow hands the outcome on
    outcomes = [future._run.state for future in futures] + states  # every run is final by now
    failed = [state for state in outcomes if state.is_final() and not state.is_completed()]
    if not failed:
        return None
    first = failed[0]
    message = f"{len(failed)}/{len(outcomes)} returned states did not complete: {first.message}"
    return State(StateType.FAILED, message=message, exception=first.exception or FailedStateError(message))
