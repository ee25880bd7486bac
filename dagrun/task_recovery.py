"""What a done task run's outcome means, and recovery from what the infrastructure lost.

Policy (the tracker's sweep calls `finalize` for each done handle, in submission order)
- Finished -> `Completed`. An upstream run that did not complete -> `NotRun`, naming the root.
- A cache hit upstream whose entry failed verification is recomputed; a run whose upstream
  was resubmitted is resubmitted too (the error it saw is stale).
- Cancelled with the flow run -> `Cancelled`. Cancelled otherwise, or an infrastructure
  error (a worker died) -> a lost attempt: resubmitted within the task's retries (at least
  one), else `Crashed`; each lost attempt is recorded.
- A lost scheduler connection raises `SchedulerLost` out of the sweep; the tracker then calls
  `recover_from_scheduler_loss`, which waits for the reconnection and submits again what is
  unfinished or still needed.
- Anything else -> `Failed`, logged with the user's frames.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dagrun.errors import CrashedError, FailedStateError, ResultStoreError
from dagrun.executors.base import CANCELLED, ERROR, FINISHED, ExecutorSession
from dagrun.states import State, StateType
from dagrun.task_run_record import TaskRun, add_note, describe, failed_upstream, not_run_state

if TYPE_CHECKING:
    from dagrun.task_runs import TaskRunTracker

FREE_RESUBMITS = 3  # reruns of a run whose worker died while it waited there: no attempt used


class SchedulerLost(Exception):
    """Raised inside a sweep when a handle shows the scheduler connection was lost."""


def finalize(tracker: TaskRunTracker, run: TaskRun, status: str) -> bool:
    """Record the outcome of a done handle; False when the run was resubmitted instead."""
    if status == FINISHED:
        tracker.set_state(run, State(StateType.COMPLETED))
        return True
    blocked = failed_upstream(run)
    if blocked is not None:
        tracker.set_state(run, not_run_state(run, blocked))
        return True
    for up in run.upstream:
        if load_failed(tracker.session, up):
            tracker.recompute(up)  # bumps its generation, so this run is resubmitted below
    if tuple(up.generation for up in run.upstream) != run.upstream_generations:
        return tracker.resubmit(run)  # an upstream was resubmitted: the error we saw is stale
    exception = tracker.session.exception(run.handle)
    if tracker.session.scheduler_lost(exception):
        raise SchedulerLost
    if status == CANCELLED and tracker.cancelled:
        tracker.set_state(run, State(StateType.CANCELLED, message="Cancelled with the flow run"))
        return True
    if status == CANCELLED or tracker.session.is_infrastructure_error(exception):
        return lost_attempt(tracker, run, exception)
    add_note(exception, f"raised by task run '{run.name}' in flow run '{tracker.flow_run_name}'")
    tracker.log(run, logging.ERROR, f"Task run '{run.name}' failed: {describe(exception)}", exception)
    # A task that returned `Failed(message=...)` (FailedStateError) has the state's message, as
    # in Prefect; a raised exception is described by its type and text.
    message = str(exception) if type(exception) is FailedStateError else describe(exception)
    tracker.set_state(run, State(StateType.FAILED, message=message, exception=exception))
    return True


def lost_attempt(tracker: TaskRunTracker, run: TaskRun, exception: BaseException) -> bool:
    """An attempt the infrastructure lost (its worker died): it counts against the task's
    retries, so a task that kills its worker takes down at most retries + 1 of them. A run
    that was only waiting on the dead worker lost no attempt: it is resubmitted for free,
    a few times at most, so nothing loops. Returns False when the run was submitted again."""
    reason = tracker.session.describe_infrastructure_error(exception)  # first: it waits for late news
    if run.free_resubmits < FREE_RESUBMITS and not tracker.session.was_running(exception):
        run.free_resubmits += 1
        tracker.log(run, logging.INFO, f"Resubmitting '{run.name}': it was waiting on a worker that died ({reason})")
        return tracker.resubmit(run)
    budget = run.task.retry_policy.retries
    attempt = f"attempt {run.resubmits + 1} of {budget + 1}"
    if run.resubmits < budget:
        run.resubmits += 1
        tracker.log(run, logging.WARNING, f"Resubmitting '{run.name}': {attempt} was lost: {reason}")
        tracker.observer.task_attempt_lost(run, reason)
        return tracker.resubmit(run)
    crash = CrashedError(f"Task run '{run.name}' crashed on {attempt}: {reason}")
    crash.__cause__ = exception
    tracker.set_state(run, State(StateType.CRASHED, message=str(crash), exception=crash))
    return True


def recover_from_scheduler_loss(tracker: TaskRunTracker) -> list[TaskRun]:
    """The scheduler went away, taking every in-flight task and every result with it:
    wait for it to come back, then submit again what is unfinished and what is still
    needed (completed runs whose value a future or a pending run may ask for). Returns the
    runs now active, in submission order."""
    session = tracker.session
    timeout = session.reconnect_timeout
    tracker.log_flow(logging.WARNING, f"Lost the Dask scheduler; reconnecting for up to {timeout:.0f} s")
    if not session.reconnect(timeout):
        tracker.cancellation.check()
        raise CrashedError(
            f"Lost the connection to the Dask scheduler at {session.address} and could not "
            f"reconnect within {timeout:.0f} s (connect_timeout); the run's tasks were lost"
        )
    tracker.log_flow(logging.WARNING, "Reconnected to the Dask scheduler; resubmitting unfinished tasks")
    active = []
    for run in tracker.runs:  # submission order: upstream runs get their new handles first
        if run.state.type is StateType.CACHED:
            run.handle = None  # loaded again where needed
        elif run.state.is_final() and not (run.state.is_completed() and run.handle is not None):
            continue
        elif run.args is not None:
            run.generation += 1
            if tracker.dispatch(run) and not run.state.is_final():
                active.append(run)
    return active


def load_failed(session: ExecutorSession, run: TaskRun) -> bool:
    """True for a hit whose entry failed verification when a worker read it."""
    return (
        run.state.type is StateType.CACHED and run.handle is not None
        and session.status(run.handle) == ERROR
        and isinstance(session.exception(run.handle), ResultStoreError)
    )
