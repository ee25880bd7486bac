"""Task runs of one flow run: submission, state tracking, failure propagation, infra retries.

Policy
- A task call is submitted to the executor at once; upstream futures found anywhere in its
  arguments are replaced by the executor's handles, so the executor sees the dependency.
- A call whose upstream already failed is not submitted: it is `NotRun` immediately.
- Discarded direct calls are steps that later calls wait for (`task_steps`, a mixin).
- A cached task's call is a hit or a miss before dispatch (`task_cache_plan`).
- Outcomes are read in submission order (which is a topological order), so when a run is
  finalized its upstream runs already are. An error is classified as: upstream failed ->
  `NotRun`; upstream resubmitted -> resubmit too; infrastructure (worker died, scheduler
  lost) -> resubmit within the task's retries, else `Crashed`, each lost attempt recorded
  as one; a run whose worker died while it only waited there is resubmitted without using an
  attempt (a few times at most); otherwise -> `Failed` (`task_recovery`).
- A cancel request (`RunCancellation`) wakes every wait; the next task call or wait raises
  `CancelRequested` in the flow body.
- Nothing blocks on success: finished runs are swept in batches, and a finished run's handle
  is released as soon as no `TaskFuture` refers to it, so memory stays bounded.
- A value asked for comes with the other finished values the flow still holds, in one round
  trip; a cache hit's value is read from the store by the driver (`result_batches`).

State kept: every `TaskRun` record (small; `task_run_record`) for the flow's lifetime, and the
list of runs not yet final. `set_state` is the one place a task run's state changes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dagrun.caching import CachePlanner
from dagrun.cancellation import RunCancellation
from dagrun.call_arguments import fingerprint, substitute_handles, upstream_of
from dagrun.config import env_flag
from dagrun.errors import CancelledRunError
from dagrun.executors.base import FINISHED, PENDING, ExecutorSession, Submission
from dagrun.flow_timeouts import RunTimeout
from dagrun.futures import TaskFuture
from dagrun.log_cap import log_cap_bytes
from dagrun.logs import log_line
from dagrun.observers import Observers
from dagrun.result_batches import MISSING, ResultBatches
from dagrun.results import ResultStore
from dagrun.runner import TaskSpec
from dagrun.states import State, StateType
from dagrun.task_cache_plan import plan_cached
from dagrun.task_recovery import SchedulerLost, finalize, load_failed, recover_from_scheduler_loss
from dagrun.task_run_record import TaskRun, dask_key, failed_upstream, not_run_state
from dagrun.task_steps import TaskSteps
from dagrun.tracebacks import views_of

SWEEP_EVERY = 512


class TaskRunTracker(TaskSteps):
    """Submits the task calls of one flow run and follows them to their final states."""

    def __init__(
        self,
        session: ExecutorSession,
        *,
        flow_run_id: str,
        flow_run_name: str,
        run_numbers: Iterator[int],
        log_sink: Callable[[dict], None],
        log_prints: bool,
        keep_completed: bool = False,
        reusable: dict[tuple[str, int], TaskRun] | None = None,
        timeout: RunTimeout | None = None,
        flow_name: str = "",
        result_storage: str | None = None,
        content_hashes: dict[str, str] | None = None,
        observer: Observers,
        cancellation: RunCancellation | None = None,
        flow_parameters: dict[str, Any] | None = None,
    ) -> None:
        self.session = session
        self.flow_parameters = flow_parameters or {}  # for cache_policy=FLOW_PARAMETERS
        self.cancellation = cancellation or RunCancellation()
        self.flow_run_id = flow_run_id
        self.flow_run_name = flow_run_name
        self._run_numbers = run_numbers  # shared by the flow run's attempts: task run ids never repeat
        self.log_sink = log_sink
        self.log_prints = log_prints
        self.timeout = timeout or RunTimeout("", None, None)  # the flow run's (and enclosing runs') deadline
        self.runs: list[TaskRun] = []
        self.first_failure: TaskRun | None = None
        self._active: list[TaskRun] = []
        self._call_counts: dict[str, int] = {}
        self._keep_completed = keep_completed  # flow retries reuse completed runs' handles
        self._reusable = reusable or {}
        self._specs: dict[Any, TaskSpec] = {}
        self._deferred: list[TaskRun] = []  # waiting for upstream results before they can be planned
        self._flow_name = flow_name
        self._result_storage = result_storage
        self.content_hashes = {} if content_hashes is None else content_hashes  # from workers' result records
        self.planner: CachePlanner | None = None
        self.observer = observer  # told what happens to each task run (history, progress, hooks)
        self._report, self._dispatches = observer.wants("task_events"), observer.wants("task_runs_dispatched")
        self.batches = ResultBatches(session, lambda: self.cache_planner().store)

    # ---------------------------------------------------------------- submission
    def submit(self, task: Any, args: tuple, kwargs: dict, wait_for: Iterable[Any] = ()) -> TaskFuture:
        return self.submit_many(task, [(args, kwargs)], wait_for)[0]

    def submit_many(self, task: Any, calls: list[tuple[tuple, dict]], wait_for: Iterable[Any] = ()) -> list[TaskFuture]:
        """Submit calls of one task together (one scheduler message for a whole `map`)."""
        self.before_call()  # a cancel request or a failed step raises here, in the body
        wait_for = tuple(wait_for or ())
        futures, batch = [], []
        for args, kwargs in calls:
            index = self._call_counts.get(task.name, 0)
            self._call_counts[task.name] = index + 1
            # Unique without a syscall per run: the flow run's random id + a counter.
            run = TaskRun(f"{self.flow_run_id[:20]}{next(self._run_numbers):012x}", task, index, args, kwargs)
            run.wait_for = wait_for
            future = TaskFuture(run, self)
            run.future_ref = weakref.ref(future)
            futures.append(future)
            self.runs.append(run)
            if self._keep_completed or self._reusable:
                run.fingerprint = fingerprint(run)
            run.upstream = tuple(upstream_of(run))  # one walk of the arguments, used by _plan too
            self.observer.task_run_created(run, self.flow_run_id)
            previous = self._reusable.get((task.name, index))
            if previous is not None and self._reuse(run, previous):
                continue
            submission = self._plan(run)
            if submission is not None:
                batch.append((run, submission))
        if batch:
            handles = self.session.submit_many([submission for _, submission in batch])
            for (run, _), handle in zip(batch, handles):
                run.handle = handle
                self._active.append(run)
            if self._dispatches:
                self.observer.task_runs_dispatched([run for run, _ in batch])
            self._since_sweep += len(batch)
            if self._since_sweep >= SWEEP_EVERY:
                self.sweep()
        return futures

    def _plan(self, run: TaskRun) -> Submission | None:
        """What to send for `run` now; None when it is deferred, cached, or cannot run.

        `run.upstream` must already list the runs its arguments and `wait_for` refer to."""
        upstream = run.upstream
        if any((up.handle is None or up in run.tolerated) and not up.state.is_final() for up in upstream) or (
            run.task.cache and any(not up.state.is_final() for up in upstream)
        ):
            self._deferred.append(run)  # planned when its upstream runs are (cache keys need them)
            return None
        if run.task.cache:
            return plan_cached(self, run)
        return self.prepare(run)

    def prepare(self, run: TaskRun) -> Submission | None:
        """What to send to the executor for `run`; None when it cannot run (upstream failed)."""
        upstream: list[TaskRun] = []
        args = substitute_handles(run.args, upstream, self.handle_of)
        kwargs = substitute_handles(run.kwargs, upstream, self.handle_of)
        ordering: list[TaskRun] = []
        substitute_handles(run.wait_for, ordering, self.handle_of)
        run.upstream = (*upstream, *ordering)
        run.upstream_generations = tuple(up.generation for up in run.upstream)
        blocked = failed_upstream(run)
        if blocked is not None:
            self.set_state(run, not_run_state(run, blocked))
            return None
        return Submission(
            self._spec(run.task), run.id, run.index, args, kwargs,
            dask_key(run), run.task.resources, [up.handle for up in ordering if up.handle is not None],
        )

    def _spec(self, task: Any) -> TaskSpec:
        spec = self._specs.get(task)
        if spec is None:
            log_prints = self.log_prints if task.log_prints is None else task.log_prints
            store = self.cache_planner().store if task.cache else None
            spec = self._specs[task] = TaskSpec(
                task, self.flow_run_id, self.flow_run_name, log_prints, store, report=self._report,
                log_cap_bytes=log_cap_bytes() or 0,
            )
        return spec

    def cache_planner(self) -> CachePlanner:
        """The flow run's cache planner, made when a cached task is first called."""
        if self.planner is None:
            store = ResultStore.from_env(self._result_storage)
            self.planner = CachePlanner(store, self._flow_name, refresh_all=env_flag("DAGRUN_REFRESH_CACHE"))
        return self.planner

    def handle_of(self, run: TaskRun) -> Any:
        """The executor handle of a run; a cache hit gets one (a load where it is needed) on demand."""
        if run.handle is None and run.state.type is StateType.CACHED:
            run.handle = self.session.load(self._spec(run.task), run.cache_key, key=f"load-{run.task.name}-{run.id}")
        return run.handle

    def dispatch(self, run: TaskRun) -> bool:
        """Submit `run` on its own; False when it cannot run (an upstream failed)."""
        submission = self.prepare(run)
        if submission is None:
            return False
        if run.cache_key is not None:
            submission = dataclasses.replace(submission, cache_key=run.cache_key)
        run.handle = self.session.submit_many([submission])[0]
        self.observer.task_runs_dispatched((run,))
        return True

    def _plan_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for run in deferred:
            if run.state.is_final():
                continue
            submission = self._plan(run)
            if submission is not None:
                run.handle = self.session.submit_many([submission])[0]
                self.observer.task_runs_dispatched((run,))
                self._active.append(run)

    def _reuse(self, run: TaskRun, previous: TaskRun) -> bool:
        """Adopt a run completed in an earlier attempt of this flow run, if its inputs match."""
        if previous.handle is None or not previous.state.is_completed() or previous.fingerprint != run.fingerprint:
            return False
        run.handle = previous.handle
        run.args = run.kwargs = None
        self.set_state(run, State(StateType.COMPLETED, message="Reused from the previous attempt"))
        return True

    # ---------------------------------------------------------------- outcomes
    def sweep(self, until: TaskRun | None = None) -> None:
        """Finalize every run whose handle is done (up to `until`, in submission order)."""
        self._since_sweep = 0
        still_active: list[TaskRun] = []
        status_of = self.session.status
        reached = False
        active, self._active = self._active, []  # finalize may add recomputed hits
        try:
            for run in active:
                if reached:
                    still_active.append(run)
                    continue
                status = status_of(run.handle)
                if status == PENDING or not finalize(self, run, status):
                    still_active.append(run)
                reached = run is until
        except SchedulerLost:
            self._active = recover_from_scheduler_loss(self)
            return
        self._active = self._active + still_active  # recomputed hits first: they are upstream
        if self._deferred:
            self._plan_deferred()

    def log_flow(self, level: int, message: str) -> None:
        """A log line of the flow run itself (not of one of its task runs)."""
        self.log_sink(log_line(level, message, "dagrun.flow_run", self.flow_run_id, self.flow_run_name))

    def resubmit(self, run: TaskRun) -> bool:
        """Submit `run` again; True when that made it final (NotRun) instead of active."""
        run.generation += 1
        return not self.dispatch(run)

    def set_state(self, run: TaskRun, state: State) -> None:
        """The one place a task run's state changes (through the transition table)."""
        if not run.enter(state):
            return  # a repeat of its final state: nothing changes
        if state.is_final():
            self.observer.task_run_state(run, state, self.flow_run_id)
            if state.type in (StateType.FAILED, StateType.CRASHED) and self.first_failure is None:
                self.first_failure = run
            if not state.is_completed() or (run.future_ref() is None and not self._keep_completed):
                run.handle = None
            # A completed run whose value may still be asked for keeps its inputs, so it can be
            # computed again if the scheduler (and with it the value) is lost; a cache hit keeps
            # them in case its entry fails verification when read (see recompute).
            if state.type is not StateType.CACHED and (run.handle is None or state.type is not StateType.COMPLETED):
                run.args = run.kwargs = None
                run.wait_for = ()

    # ---------------------------------------------------------------- waiting
    def current_state(self, run: TaskRun) -> State:
        if not run.state.is_final() and run.handle is not None and self.session.status(run.handle) != PENDING:
            self.sweep(until=run)
        return run.state

    def wait_for(self, run: TaskRun, timeout: float | None = None) -> State:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not run.state.is_final():
            if run.handle is None:  # deferred: let what it waits for make progress
                if self._active:
                    self.session.wait_any([r.handle for r in self._active], self._remaining(deadline))
                self.cancellation.check()
                self.sweep()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                continue
            if not self.session.wait([run.handle], self._remaining(deadline)):
                break
            self.sweep(until=run)
        self.timeout.check()
        self.cancellation.check()
        return run.state

    def result(self, run: TaskRun, *, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        state = self.wait_for(run, timeout)
        if not state.is_final():
            raise TimeoutError(f"Task run '{run.name}' did not finish within {timeout} s")
        if not state.is_completed():
            return state.result(raise_on_failure=raise_on_failure)
        value = self.batches.value(run, self.runs)  # with the values asked for next
        return self._values([run])[0] if value is MISSING else value

    def results(self, futures: list[TaskFuture]) -> list[Any]:
        """The values of many futures, fetched in one round trip; raises the first failure."""
        for future in futures:
            self.wait_for(future._run)
        for future in futures:
            future._run.state.result()  # raises for a run that did not complete
        return self._values([future._run for future in futures])

    def _values(self, runs: list[TaskRun]) -> list[Any]:
        """The values of completed runs: fetched ahead, read from the store (hits), else
        gathered together; a hit whose entry is unusable is recomputed first."""
        known = {run.id: value for run in runs if (value := self.batches.take(run)) is not MISSING}
        known.update(self.batches.read_hits([run for run in runs if run.id not in known]))
        rest = [run for run in runs if run.id not in known]
        if rest:
            known.update(zip((run.id for run in rest), self._gather_values(rest)))
        return [known[run.id] for run in runs]

    def _gather_values(self, runs: list[TaskRun]) -> list[Any]:
        handles = [self.handle_of(run) for run in runs]
        self.session.wait(handles, self._remaining(None))
        self.cancellation.check()
        broken = [run for run in runs if load_failed(self.session, run)]
        for run in broken:
            self.recompute(run)
        for run in broken:
            self.wait_for(run).result()  # raises if the recomputation failed
        return self.session.gather([run.handle for run in runs])

    def recompute(self, run: TaskRun) -> None:
        """Run a hit's task after all: its entry was discarded when read (checksum mismatch,
        truncation), so the store never returns it; the run rewrites the entry."""
        self.log(run, logging.WARNING, f"Recomputing '{run.name}': {self.session.exception(run.handle)}")
        run.generation += 1
        run.handle = None
        self.set_state(run, State(StateType.RUNNING))
        if self.dispatch(run):
            self._active.insert(0, run)  # before the runs waiting for it: topological order

    def wait_all(self) -> None:
        """Block until every submitted run, kept or dropped by the flow code, is final."""
        while self._active or self._deferred:
            if self._active:
                self.session.wait([run.handle for run in self._active], self._remaining(None))
            self.timeout.check()
            self.cancellation.check()
            self.sweep()

    def cancel(self) -> None:
        """Cancel every run that has not finished; their states become Cancelled. A run that
        finished before the cancel but was not swept yet is recorded Completed, as it is."""
        self.cancelled = True
        finished = [run for run in self._active if self.session.status(run.handle) == FINISHED]
        for run in finished:
            self.set_state(run, State(StateType.COMPLETED))
        active = [run for run in self._active + self._deferred if not run.state.is_final()]
        self._active, self._deferred = [], []
        self.session.cancel(run.handle for run in active if run.handle is not None)
        error = CancelledRunError(f"Cancelled with flow run '{self.flow_run_name}'")
        for run in active:
            self.set_state(run, State(StateType.CANCELLED, message=str(error), exception=error))

    def forget(self, run: TaskRun) -> None:
        """Called when a run's last TaskFuture goes away: release a finished run's value."""
        if run.state.is_final() and not self._keep_completed:
            run.handle = None
            run.args = run.kwargs = None
            run.wait_for = ()

    def _remaining(self, deadline: float | None) -> float | None:
        ends = [d for d in (deadline, self.timeout.earliest) if d is not None]
        return max(0.0, min(ends) - time.monotonic()) if ends else None

    def log(self, run: TaskRun, level: int, message: str, exception: BaseException | None = None) -> None:
        views = views_of(exception) if exception is not None else None
        if views is not None and views.has_user_frames:  # else the message says it all
            message += "\n" + views.user
        self.log_sink(
            log_line(level, message, "dagrun.task_run", self.flow_run_id, self.flow_run_name, run.id, run.name)
        )

    cancelled, _since_sweep = False, 0
