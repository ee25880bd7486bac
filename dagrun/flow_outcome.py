"""The final state of a flow run whose body returned, after every task run is final.

Prefect 3's rules (DESIGN section 2, Flows), in order:
1. A returned `State` is the final state (`Completed(message=...)`, `Failed(...)`, a custom
   name kept); a returned list/tuple/set of only states and futures fails the run when one of
   them did not complete (Cancelled when one was cancelled, Crashed when each failure is a
   crash); a state among other values is a
   value (`("bar", failed_state)` completes); a returned future that failed, nested anywhere,
   fails the run (its value is what the flow returns, and it has none).
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
_STATE_COLLECTIONS = (list, tuple, set)  # Prefect's `is_state_iterable`
_OUTCOMES = (State, TaskFuture)


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
    """The state the return value chooses, as Prefect 3's `return_value_to_state` does: a
    returned `State` as it is (a failed one without an exception gets `FailedStateError`);
    a list, tuple or set made only of states and futures (`return state_one, state_two`) by
    their outcomes; else None (`("bar", failed_state)` is a value, and the run completes),
    except that a failed future inside the value fails the run: dagrun resolves returned
    futures to their values, and a failed one has none."""
    if type(value) is TaskFuture:
        value = [value]
    if isinstance(value, State):
        if value.is_completed():
            return State(StateType.COMPLETED, message=value.message, data=value.data, custom_name=value.custom_name)
        # A flow run ends Failed, Crashed or Cancelled: a returned NotRun or Pending is a failure.
        kind = value.type if value.type in _FLOW_FAILURES else StateType.FAILED
        message = value.message or f"The flow returned a {value.name} state"
        return State(
            kind, message=message, data=value.data, exception=value.exception or FailedStateError(message),
            custom_name=value.custom_name,
        )
    futures: list[TaskFuture] = []
    instances_in(value, TaskFuture, futures)
    for future in futures:
        future._run.seen = True  # returned: the flow hands the outcome on
    outcomes = [future._run.state for future in futures]  # every run is final by now
    if type(value) in _STATE_COLLECTIONS and value and all(type(item) in _OUTCOMES for item in value):
        outcomes += [item for item in value if type(item) is State]
    failed = [state for state in outcomes if state.is_final() and not state.is_completed()]
    if not failed:
        return None
    cancelled = [state for state in failed if state.type is StateType.CANCELLED]
    first = (cancelled or failed)[0]
    # Only the infrastructure failed (every failure a crash): the run is Crashed, not Failed.
    crashed = all(state.type is StateType.CRASHED for state in failed)
    kind = StateType.CANCELLED if cancelled else StateType.CRASHED if crashed else StateType.FAILED
    verb = "were cancelled" if cancelled else "did not complete"
    message = f"{len(cancelled or failed)}/{len(outcomes)} returned states {verb}: {first.message}"
    return State(kind, message=message, exception=first.exception or FailedStateError(message))
