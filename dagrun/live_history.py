"""Task runs in the history as they go: workers' task events and the engine's final states,
folded into one story per task run.

Two sources report on a task run. Its worker reports when each attempt starts and how it ends
(`dagrun.task_events`, in batches, about a quarter of a second late); the engine reports the
final state it classified (`Completed`, `Failed`, `NotRun`, `Crashed`, ...) when the flow code
or the end of the run looks at the task. Either may come first, so:

- a worker's `TaskRunStarted` records `Running` (with worker, attempt and start time), unless
  the same batch already ends that attempt (then only the end is written: fewer rows);
- a worker's failed attempt records the attempt (start, end, error) and `Retrying`, or `Failed`
  when no retry follows; a finished run records `Completed` with its end and result size;
- the engine's final state is written unless the worker already wrote that same state (then
  only the engine's fuller error is added); when the engine is first, what the worker reports
  later only fills in fields (`TaskRunDetails`: worker, start, end, attempts), never a state.

Attempt rows are written for every attempt of a run that failed or was retried (also one
that ended with its worker: `attempt_lost`); a run that succeeded at once is its own single
attempt. Ignored: records of flow runs this recorder does not record (another driver sharing
the cluster), and late records of a submission that is over (from a worker that was lost, or
an attempt that started before the run's recorded end), so a frozen worker that wakes up
never reopens a run. Thread-safe: workers' batches arrive on the executor's thread, final
states on the engine's; one lock orders what each submits.

Every state written goes through the transition table (`dagrun.states.check_report`), from
the state the history shows: a second final state the table does not allow after the first
adds no state. A move the table forbids is a bug: it is logged as an error and not written
(the history never fails a run).

State kept (small, per task run of the flow run): the state the history shows, the final
state each source wrote while the other's is pending, the attempt running now, when the
worker reported the end.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

from dagrun.history.events import Event, TaskRunAttempt, TaskRunDetails, TaskRunState
from dagrun.states import IllegalTransition, StateType, check_report
from dagrun.task_events import AttemptFailed, TaskEvent, TaskRunFinished, TaskRunStarted

_PENDING, _RUNNING, _RETRYING = StateType.PENDING, StateType.RUNNING, StateType.RETRYING
_COMPLETED, _FAILED, _CRASHED = StateType.COMPLETED, StateType.FAILED, StateType.CRASHED
# Final states the engine may record before the task's worker has reported its end.
_WORKER_MAY_REPORT = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED})

logger = logging.getLogger("dagrun.history")


class LiveTaskRuns:
    """Merges the two sources into history events for `submit` (see the module docstring)."""

    def __init__(self, submit: Callable[[Event], None]) -> None:
        self._submit = submit
        self._lock = threading.Lock()
        self._flow_runs: set[str] = set()
        # task run -> the state the history shows (absent: Pending, or its story is told)
        self._shown: dict[str, StateType] = {}
        self._worker_final: dict[str, StateType] = {}  # task run -> final state its worker's report wrote
        self._engine_final: dict[str, StateType] = {}  # task run -> final state the engine wrote first
        self._started: dict[str, tuple[int, float, str | None]] = {}  # run -> attempt, start, worker
        self._ended: dict[str, float] = {}  # task run -> when its worker reported its end
        self._lost_on: dict[str, str] = {}  # task run -> the worker its last lost attempt ran on
        # task run -> attempts made before its current submission (each lost with a worker):
        # a resubmitted run's worker counts its attempts from 1 again.
        self._earlier: dict[str, int] = {}

    def add_flow_run(self, flow_run_id: str) -> None:
        """Record the task events of this flow run from now on."""
        self._flow_runs.add(flow_run_id)

    def worker_events(self, events: Sequence[TaskEvent]) -> None:
        """One batch of workers' records, in the order they happened on each worker."""
        running: dict[str, TaskRunStarted] = {}  # written at the end unless the batch ends them
        with self._lock:
            for event in events:
                if event.flow_run_id not in self._flow_runs:
                    continue
                task_run_id = event.task_run_id
                if self._is_stale(event):
                    continue
                running.pop(task_run_id, None)
                earlier = self._earlier.get(task_run_id)
                if earlier:
                    event = event._replace(attempt=event.attempt + earlier)
                kind = type(event)
                if kind is TaskRunStarted:
                    self._ended.pop(task_run_id, None)
                    self._started[task_run_id] = (event.attempt, event.start_time, event.worker)
                    if task_run_id not in self._engine_final:
                        self._worker_final.pop(task_run_id, None)  # submitted again, running again
                        running[task_run_id] = event
                elif kind is AttemptFailed:
                    self._attempt_failed(event)
                else:
                    self._finished(event)
            for event in running.values():
                self._show(TaskRunState(
                    event.task_run_id, _RUNNING.value, event.start_time, attempt=event.attempt, worker=event.worker
                ), _RUNNING)

    def _is_stale(self, event: TaskEvent) -> bool:
        """Whether `event` comes from a submission that is over: from the worker a lost attempt
        ran on, from a worker other than the one running the run now, or from before its end."""
        task_run_id = event.task_run_id
        if event.worker is not None and self._lost_on.get(task_run_id) == event.worker:
            return True
        ended = self._ended.get(task_run_id)
        if type(event) is TaskRunStarted:
            return ended is not None and event.start_time < ended
        if ended is not None:
            return True  # its end is already recorded
        running = self._started.get(task_run_id)
        return running is not None and event.worker is not None and running[2] != event.worker

    def _attempt_failed(self, event: AttemptFailed) -> None:
        self._submit(TaskRunAttempt(
            event.task_run_id, event.attempt, event.start_time, event.end_time, event.error, event.traceback,
            event.full_traceback,
        ))
        if event.retrying:
            if event.task_run_id not in self._engine_final:
                self._show(TaskRunState(
                    event.task_run_id, _RETRYING.value, event.end_time, event.message,
                    attempt=event.attempt, worker=event.worker, start_time=event.run_start_time,
                ), _RETRYING)
            return
        self._run_ended(event, _FAILED, TaskRunState(  # a returned `Failed(message=...)` has its message
            event.task_run_id, _FAILED.value, event.end_time, event.message or event.error, attempt=event.attempt,
            error=event.error, traceback=event.traceback, full_traceback=event.full_traceback, worker=event.worker,
            start_time=event.run_start_time, end_time=event.end_time,
        ))

    def _finished(self, event: TaskRunFinished) -> None:
        if event.attempt > 1:  # the earlier attempts failed: this one gets its row too
            self._submit(TaskRunAttempt(event.task_run_id, event.attempt, event.start_time, event.end_time))
        self._run_ended(event, _COMPLETED, TaskRunState(
            event.task_run_id, _COMPLETED.value, event.end_time, event.message, attempt=event.attempt, worker=event.worker,
            cache_hit=False if event.cache_key else None, result_size=event.size,
            start_time=event.run_start_time, end_time=event.end_time, cache_key=event.cache_key,
        ))

    def _run_ended(self, event: AttemptFailed | TaskRunFinished, kind: StateType, state: TaskRunState) -> None:
        """The worker's end of a run: its final state, or details if the engine was first."""
        self._started.pop(event.task_run_id, None)
        self._earlier.pop(event.task_run_id, None)
        self._ended[event.task_run_id] = event.end_time
        if self._engine_final.pop(event.task_run_id, None) is None and self._show(state, kind):
            self._worker_final[event.task_run_id] = kind
            return
        self._shown.pop(event.task_run_id, None)  # both sources have spoken: the run's story is told
        self._submit(TaskRunDetails(
            event.task_run_id, event.worker, event.run_start_time, event.end_time, event.attempt,
            state.result_size, message=event.message or None,
        ))

    def awaiting_workers(self) -> bool:
        """Whether some run's final state was recorded before its worker's report came."""
        return bool(self._engine_final)

    def engine_state(self, task_run_id: str, state: StateType, build: Callable[[], TaskRunState]) -> None:
        """The engine's final `state` of a task run; `build()` makes its `TaskRunState` (only
        when it is written: most runs' workers reported the same state first)."""
        with self._lock:
            reported = self._worker_final.pop(task_run_id, None)
            if reported is not None and not self._moves(task_run_id, state):  # the worker's end stands
                self._shown.pop(task_run_id, None)  # both sources have spoken: the run's story is told
                if state is _FAILED and reported is _FAILED:  # the engine's error names the task and flow run
                    event = build()
                    self._submit(TaskRunDetails(
                        task_run_id, error=event.error, traceback=event.traceback,
                        full_traceback=event.full_traceback,
                    ))
                return
            event = build()
            running = self._started.pop(task_run_id, None)
            if state is _CRASHED:  # its last attempt ended with the infrastructure
                attempt = self._earlier.get(task_run_id, 0) + 1
                self._submit(TaskRunAttempt(
                    task_run_id, attempt, running[1] if running else None, event.timestamp, event.error,
                    event.traceback, event.full_traceback,
                ))
                event = dataclasses.replace(event, attempt=attempt)
            if self._show(event, state) and reported is None and state in _WORKER_MAY_REPORT:
                self._engine_final[task_run_id] = state
            else:  # no report of its worker to wait for
                self._shown.pop(task_run_id, None)

    def attempt_lost(self, task_run_id: str, error: str) -> None:
        """The current attempt of a run ended with its worker; the run is submitted again, and
        its next worker counts attempts from 1 again (they are numbered on from this one)."""
        with self._lock:
            now = time.time()
            attempt, start, worker = self._started.pop(task_run_id, None) or (
                self._earlier.get(task_run_id, 0) + 1, None, None
            )
            self._earlier[task_run_id] = attempt
            if worker is not None:
                self._lost_on[task_run_id] = worker
            self._submit(TaskRunAttempt(task_run_id, attempt, start, now, error))
            if task_run_id not in self._engine_final:
                self._show(TaskRunState(task_run_id, _RETRYING.value, now, f"Resubmitted after {error}"), _RETRYING)

    def _moves(self, task_run_id: str, new: StateType) -> bool:
        """Whether the history moves the run to `new` (the transition table's verdict, from
        the state it shows); False when `new` adds no state or the move is illegal (logged)."""
        try:
            return check_report(self._shown.get(task_run_id, _PENDING), new, run=task_run_id)
        except IllegalTransition as exc:
            exc.run = f"task run {task_run_id}"  # named in full only here, off the hot path
            logger.error("%s; not recorded", exc)
            return False

    def _show(self, event: TaskRunState, state: StateType) -> bool:
        """Write `event`, the run's move to `state`, if the table allows it; True when written."""
        if not self._moves(event.task_run_id, state):
            return False
        self._shown[event.task_run_id] = state
        self._submit(event)
        return True
