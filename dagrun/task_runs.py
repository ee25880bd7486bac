"""Task runs of one flow run: submission, state tracking, failure propagation, infra retries.

Policy
- A task call is submitted to the executor at once; upstream futures found anywhere in its
  arguments are replaced by the executor's handles, so the executor sees the dependency.
- A call whose upstream already failed is not submitted: it is `NotRun` immediately.
- Outcomes are read in submission order (which is a topological order), so when a run is
  finalized its upstream runs already are. An error is classified as: upstream failed ->
  `NotRun`; upstream resubmitted -> resubmit too; infrastructure (worker died, scheduler
  lost) -> resubmit within the task's retry budget, else `Crashed`; otherwise -> `Failed`.
- Nothing blocks on success: finished runs are swept in batches, and a finished run's handle
  is released as soon as no `TaskFuture` refers to it, so memory stays bounded.

State kept: every `TaskRun` record (small) for the flow's lifetime, and the list of runs not
yet final. `_set_state` is the one place a task run's state changes.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from dagrun.errors import CancelledRunError, CrashedError, FlowTimeoutError, UpstreamFailedError
from dagrun.executors.base import CANCELLED, FINISHED, PENDING, ExecutorSession, Submission
from dagrun.futures import TaskFuture
from dagrun.runner import TaskSpec
from dagrun.states import State, StateType

SWEEP_EVERY = 512
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


class unmapped:  # noqa: N801 - named like Prefect's, used as a marker in calls
    """Wrap an argument of `task.map(...)` that is passed whole to every call."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class TaskRun:
    """The driver's record of one task run; mutated only by `TaskRunTracker`."""

    __slots__ = (
        "id", "task", "index", "state", "handle", "upstream", "generation",
        "upstream_generations", "args", "kwargs", "wait_for", "resubmits", "future_ref",
        "fingerprint",
    )

    def __init__(self, task: Any, index: int, args: tuple, kwargs: dict) -> None:
        self.id = uuid.uuid4().hex
        self.task = task
        self.index = index
        self.state = _SUBMITTED
        self.handle: Any = None
        self.upstream: tuple[TaskRun, ...] = ()
        self.generation = 0
        self.upstream_generations: tuple[int, ...] = ()
        self.args: tuple | None = args
        self.kwargs: dict | None = kwargs
        self.wait_for: tuple = ()
        self.resubmits = 0
        self.future_ref: Callable[[], TaskFuture | None] = _dead_ref
        self.fingerprint: str | None = None

    @property
    def name(self) -> str:
        """`<task name>-<n>`: the n-th call of this task in its flow run."""
        return f"{self.task.name}-{self.index}"


_SUBMITTED = State(StateType.PENDING, timestamp=0.0)  # shared: 20,000 runs need not each own one


def _dead_ref() -> None:
    return None


class TaskRunTracker:
    """Submits the task calls of one flow run and follows them to their final states."""

    def __init__(
        self,
        session: ExecutorSession,
        *,
        flow_run_id: str,
        flow_run_name: str,
        log_sink: Callable[[dict], None],
        log_prints: bool,
        keep_completed: bool = False,
        reusable: dict[tuple[str, int], TaskRun] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.session = session
        self.flow_run_id = flow_run_id
        self.flow_run_name = flow_run_name
        self.log_sink = log_sink
        self.log_prints = log_prints
        self.deadline = deadline
        self.runs: list[TaskRun] = []
        self.first_failure: TaskRun | None = None
        self._active: list[TaskRun] = []
        self._call_counts: dict[str, int] = {}
        self._keep_completed = keep_completed  # flow retries reuse completed runs' handles
        self._reusable = reusable or {}
        self._specs: dict[Any, TaskSpec] = {}

    # ---------------------------------------------------------------- submission
    def submit(self, task: Any, args: tuple, kwargs: dict, wait_for: Iterable[Any] = ()) -> TaskFuture:
        return self.submit_many(task, [(args, kwargs)], wait_for)[0]

    def submit_many(self, task: Any, calls: list[tuple[tuple, dict]], wait_for: Iterable[Any] = ()) -> list[TaskFuture]:
        """Submit calls of one task together (one scheduler message for a whole `map`)."""
        wait_for = tuple(wait_for or ())
        futures, batch = [], []
        for args, kwargs in calls:
            index = self._call_counts.get(task.name, 0)
            self._call_counts[task.name] = index + 1
            run = TaskRun(task, index, args, kwargs)
            run.wait_for = wait_for
            future = TaskFuture(run, self)
            run.future_ref = weakref.ref(future)
            futures.append(future)
            self.runs.append(run)
            if self._keep_completed or self._reusable:
                run.fingerprint = _fingerprint(run)
            previous = self._reusable.get((task.name, index))
            if previous is not None and self._reuse(run, previous):
                continue
            submission = self._prepare(run)
            if submission is not None:
                batch.append((run, submission))
        if batch:
            handles = self.session.submit_many([submission for _, submission in batch])
            for (run, _), handle in zip(batch, handles):
                run.handle = handle
                self._active.append(run)
            self._since_sweep += len(batch)
            if self._since_sweep >= SWEEP_EVERY:
                self.sweep()
        return futures

    def _prepare(self, run: TaskRun) -> Submission | None:
        """What to send to the executor for `run`; None when it cannot run (upstream failed)."""
        upstream: list[TaskRun] = []
        args = _substitute(run.args, upstream)
        kwargs = _substitute(run.kwargs, upstream)
        ordering: list[TaskRun] = []
        _substitute(run.wait_for, ordering)
        run.upstream = (*upstream, *ordering)
        run.upstream_generations = tuple(up.generation for up in run.upstream)
        blocked = next((up for up in run.upstream if up.state.is_final() and not up.state.is_completed()), None)
        if blocked is not None:
            self._set_state(run, self._not_run_state(run, blocked))
            return None
        return Submission(
            self._spec(run.task), run.id, run.index, args, kwargs,
            f"{run.task.name}-{run.id}", run.task.resources, [up.handle for up in ordering],
        )

    def _spec(self, task: Any) -> TaskSpec:
        spec = self._specs.get(task)
        if spec is None:
            log_prints = self.log_prints if task.log_prints is None else task.log_prints
            spec = self._specs[task] = TaskSpec(task, self.flow_run_id, self.flow_run_name, log_prints)
        return spec

    def _dispatch(self, run: TaskRun) -> bool:
        """Submit `run` on its own; False when it cannot run (an upstream failed)."""
        submission = self._prepare(run)
        if submission is None:
            return False
        run.handle = self.session.submit_many([submission])[0]
        return True

    def _reuse(self, run: TaskRun, previous: TaskRun) -> bool:
        """Adopt a run completed in an earlier attempt of this flow run, if its inputs match."""
        if previous.handle is None or not previous.state.is_completed() or previous.fingerprint != run.fingerprint:
            return False
        run.handle = previous.handle
        run.args = run.kwargs = None
        self._set_state(run, State(StateType.COMPLETED, message="Reused from the previous attempt"))
        return True

    # ---------------------------------------------------------------- outcomes
    def sweep(self, until: TaskRun | None = None) -> None:
        """Finalize every run whose handle is done (up to `until`, in submission order)."""
        self._since_sweep = 0
        still_active: list[TaskRun] = []
        status_of = self.session.status
        reached = False
        for run in self._active:
            if reached:
                still_active.append(run)
                continue
            status = status_of(run.handle)
            if status == PENDING or not self._finalize(run, status):
                still_active.append(run)
            reached = run is until
        self._active = still_active

    def _finalize(self, run: TaskRun, status: str) -> bool:
        """Record the outcome of a done handle; False when the run was resubmitted instead."""
        if status == FINISHED:
            self._set_state(run, State(StateType.COMPLETED))
            return True
        blocked = next((up for up in run.upstream if up.state.is_final() and not up.state.is_completed()), None)
        if blocked is not None:
            self._set_state(run, self._not_run_state(run, blocked))
            return True
        if tuple(up.generation for up in run.upstream) != run.upstream_generations:
            return self._resubmit(run)  # an upstream was resubmitted: the error we saw is stale
        exception = self.session.exception(run.handle)
        if status == CANCELLED and self._cancelled:
            self._set_state(run, State(StateType.CANCELLED, message="Cancelled with the flow run"))
            return True
        if status == CANCELLED or self.session.is_infrastructure_error(exception):
            if run.resubmits < run.task.retry_policy.retries:
                run.resubmits += 1
                self._log(run, logging.WARNING, f"Resubmitting '{run.name}' after {_describe(exception)}")
                return self._resubmit(run)
            crash = CrashedError(f"Task run '{run.name}' crashed: {_describe(exception)}")
            crash.__cause__ = exception
            self._set_state(run, State(StateType.CRASHED, message=str(crash), exception=crash))
            return True
        _add_note(exception, f"raised by task run '{run.name}' in flow run '{self.flow_run_name}'")
        self._log(run, logging.ERROR, f"Task run '{run.name}' failed: {_describe(exception)}", exception)
        self._set_state(run, State(StateType.FAILED, message=_describe(exception), exception=exception))
        return True

    def _resubmit(self, run: TaskRun) -> bool:
        """Submit `run` again; True when that made it final (NotRun) instead of active."""
        run.generation += 1
        return not self._dispatch(run)

    def _set_state(self, run: TaskRun, state: State) -> None:
        run.state = state
        if state.is_final():
            run.args = run.kwargs = None
            run.wait_for = ()
            if state.type in (StateType.FAILED, StateType.CRASHED) and self.first_failure is None:
                self.first_failure = run
            if not state.is_completed() or (run.future_ref() is None and not self._keep_completed):
                run.handle = None

    def _not_run_state(self, run: TaskRun, blocked: TaskRun) -> State:
        chain = [blocked]
        while chain[-1].state.type is StateType.NOT_RUN:
            cause = next((up for up in chain[-1].upstream if up.state.is_final() and not up.state.is_completed()), None)
            if cause is None:
                break
            chain.append(cause)
        root = chain[-1]
        path = " <- ".join(f"'{r.name}'" for r in chain)
        message = f"Task run '{run.name}' did not run because {path} {root.state.name.lower()}"
        error = UpstreamFailedError(message)
        error.__cause__ = root.state.exception
        return State(StateType.NOT_RUN, message=message, exception=error)

    # ---------------------------------------------------------------- waiting
    def current_state(self, run: TaskRun) -> State:
        if not run.state.is_final() and run.handle is not None and self.session.status(run.handle) != PENDING:
            self.sweep(until=run)
        return run.state

    def wait_for(self, run: TaskRun, timeout: float | None = None) -> State:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not run.state.is_final():
            if not self.session.wait([run.handle], self._remaining(deadline)):
                self._check_deadline()
                return run.state
            self.sweep(until=run)
        return run.state

    def result(self, run: TaskRun, *, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        state = self.wait_for(run, timeout)
        if not state.is_final():
            raise TimeoutError(f"Task run '{run.name}' did not finish within {timeout} s")
        if not state.is_completed():
            return state.result(raise_on_failure=raise_on_failure)
        return self.session.gather([run.handle])[0]

    def results(self, futures: list[TaskFuture]) -> list[Any]:
        """The values of many futures, fetched in one round trip; raises the first failure."""
        for future in futures:
            self.wait_for(future._run)
        for future in futures:
            future._run.state.result()  # raises for a run that did not complete
        return self.session.gather([future._run.handle for future in futures])

    def wait_all(self) -> None:
        """Block until every submitted run, kept or dropped by the flow code, is final."""
        while self._active:
            self.session.wait([run.handle for run in self._active], self._remaining(None))
            self._check_deadline()
            self.sweep()

    def cancel(self) -> None:
        """Cancel every run that has not finished; their states become Cancelled."""
        self._cancelled = True
        active, self._active = self._active, []
        self.session.cancel(run.handle for run in active if run.handle is not None)
        error = CancelledRunError(f"Cancelled with flow run '{self.flow_run_name}'")
        for run in active:
            self._set_state(run, State(StateType.CANCELLED, message=str(error), exception=error))

    def forget(self, run: TaskRun) -> None:
        """Called when a run's last TaskFuture goes away: release a finished run's value."""
        if run.state.is_final() and not self._keep_completed:
            run.handle = None

    def _remaining(self, deadline: float | None) -> float | None:
        ends = [d for d in (deadline, self.deadline) if d is not None]
        return max(0.0, min(ends) - time.monotonic()) if ends else None

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise FlowTimeoutError(f"Flow run '{self.flow_run_name}' exceeded its timeout_seconds")

    def _log(self, run: TaskRun, level: int, message: str, exception: BaseException | None = None) -> None:
        if exception is not None and exception.__traceback__ is not None:
            message += "\n" + "".join(traceback.format_exception(exception)).rstrip()
        self.log_sink(
            {
                "timestamp": time.time(),
                "level": level,
                "logger": "dagrun.task_run",
                "message": message,
                "flow_run_id": self.flow_run_id,
                "flow_run_name": self.flow_run_name,
                "task_run_id": run.id,
                "task_run_name": run.name,
            }
        )

    _cancelled = False
    _since_sweep = 0


def _substitute(value: Any, upstream: list[TaskRun]) -> Any:
    """Copy of `value` with TaskFutures (nested in list/tuple/dict/set) replaced by handles."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is TaskFuture:
        upstream.append(value._run)
        return value._run.handle
    if kind is unmapped:
        return _substitute(value.value, upstream)
    if kind in (list, tuple, set, frozenset):
        return kind(_substitute(item, upstream) for item in value)
    if kind is dict:
        return {key: _substitute(item, upstream) for key, item in value.items()}
    return value


def _fingerprint(run: TaskRun) -> str | None:
    """A deterministic digest of a call's inputs (upstream runs by their own fingerprints)."""
    from dask.base import tokenize

    def stand_in(value: Any) -> Any:
        kind = type(value)
        if kind is TaskFuture:
            return ("TaskRun", value._run.fingerprint)
        if kind in (list, tuple, set, frozenset):
            return (kind.__name__, [stand_in(item) for item in value])
        if kind is dict:
            return ("dict", sorted((repr(k), stand_in(v)) for k, v in value.items()))
        return value

    try:
        return tokenize(run.task.name, run.index, stand_in(run.args), stand_in(run.kwargs), ensure_deterministic=True)
    except Exception:  # noqa: BLE001 - an input we cannot fingerprint is simply not reused
        return None


def _describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"


def _add_note(exception: BaseException, note: str) -> None:
    notes = getattr(exception, "__notes__", [])
    if note not in notes and hasattr(exception, "add_note"):
        exception.add_note(note)
