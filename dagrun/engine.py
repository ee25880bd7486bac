"""Runs a flow: validate parameters -> enter executor -> run body (tasks submit as called)
-> wait for every task -> resolve the return value -> final state.

Policy
- Parameters are validated before the executor starts, so bad input costs nothing.
- A top-level flow run starts its executor and always shuts it down (errors, Ctrl-C too);
  a subflow run shares its parent's executor session.
- The run waits for every task it submitted, also those whose futures were dropped. The
  final state follows Prefect 3 (`dagrun.flow_outcome`): a failure the body raised, a direct
  call's failure it never looked at (raised unchanged, with a note naming the task) or a
  returned failed state fails it; a crashed task makes it `Crashed`.
- Flow retries re-run the body; task runs completed in the failed attempt (same task, same
  call position, same inputs) are reused rather than recomputed.
- `timeout_seconds` (per attempt, as in Prefect, from when the body starts) interrupts the body
  wherever it is (`dagrun.flow_timeouts`), cancels the run's tasks and ends the run `Failed`
  with `FlowTimeoutError`, not retried. A subflow also ends at its parent's deadline; it is
  then recorded `Failed` and the parent's timeout goes on up to the parent.
- Ctrl-C cancels the pending tasks, marks them `Cancelled` and re-raises KeyboardInterrupt.
  `dagrun runs cancel` and SIGTERM do the same without a signal reaching the flow body: they
  set the run's `RunCancellation`, whose `CancelRequested` the body meets at its next task
  call or wait; the run returns its `Cancelled` state (SIGTERM: then exits 143).

Everything that happens to the run is published to its `Observers` (`dagrun.observers`):
the run history, terminal progress, hooks and notifiers subscribe there; subflow runs share
their parent's.

State kept: one `FlowRunEngine` per flow run, holding the executor session and the
`TaskRunTracker` of the current attempt (`engine.tasks`, which task calls submit to).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from dagrun.async_support import call_flow_body
from dagrun.call_arguments import resolve_futures
from dagrun.cancellation import RunCancellation, sigterm_cancels
from dagrun.context import FlowRunContext, current_flow_run, flow_run_scope
from dagrun.errors import CancelledRunError, CancelRequested, CrashedError, FlowTimeoutError, ParameterValidationError
from dagrun.executors import resolve_executor
from dagrun.executors.base import Executor, ExecutorSession
from dagrun.flow_outcome import final_state
from dagrun.flow_timeouts import RunTimeout, run_interruptibly
from dagrun.hooks import HookRunner
from dagrun.log_cap import log_cap_bytes
from dagrun.logs import LogLine, capture_prints, make_log_line, print_log_line
from dagrun.observers import FlowRunStarted, FlowRunStateChanged, Observers, RunObserver
from dagrun.progress import ProgressDisplay, progress_wanted
from dagrun.recorder import CancelWatcher, RunRecorder
from dagrun import script_runs
from dagrun.run_names import flow_run_name
from dagrun.parameters import bind_parameters
from dagrun.secrets import known_values, mask, mask_exception, mask_record
from dagrun.states import FLOW_RUN_TRANSITIONS, State, StateType, transition
from dagrun.task_events import AttemptFailed, TaskEvent, TaskRunFinished
from dagrun.task_runs import TaskRunTracker


def run_flow(
    flow: Any,
    args: tuple,
    kwargs: dict,
    *,
    return_state: bool = False,
    executor: Any = None,
    observe: Callable[[FlowRunEngine], None] | None = None,
    observers: Sequence[RunObserver] = (),
) -> Any:
    """Run `flow` once to a final state; return its value (or the `State` with return_state).

    `observe(engine)` is called with the run's engine before it starts (the CLI uses it to
    report cache decisions afterwards). `observers` subscribe to what happens to a top-level
    run (and its subflow runs), after the history, progress and hooks."""
    if _importing_main_in_spawned_worker():
        # A worker process is re-importing the user's script (spawn start method). Running
        # the flow here would start a cluster inside a worker; the driver runs it instead.
        return None
    parent = current_flow_run()
    if parent is not None:
        # A subflow is a call of the parent's body: it starts after a pending step, and the
        # parent's futures among its arguments stand for their values (waited for here).
        parent.engine.tasks.settle_step()
        args, kwargs = resolve_futures((args, kwargs), parent.engine.tasks)
    try:
        parameters = bind_parameters(flow.fn, flow.name, args, kwargs)
        if flow.validate_parameters:
            parameters = flow.parameter_validator.validate(parameters)
    except ParameterValidationError as exc:
        if return_state:
            return State(StateType.FAILED, message=str(exc), exception=exc)
        raise
    engine = FlowRunEngine(flow, parameters, parent)
    if observe is not None:
        observe(engine)
    if parent is not None:
        engine.recorder, engine.observers = parent.engine.recorder, parent.engine.observers
        state = engine.run(parent.engine.session)
    else:
        log_cap_bytes()  # a bad DAGRUN_LOG_CAP_BYTES fails here, before anything starts
        chosen = resolve_executor(executor, flow.executor)
        engine.recorder = RunRecorder.open()
        progress = ProgressDisplay(engine.flow_run_name) if progress_wanted() else None
        # The history first: a hook sees its run recorded.
        subscribers = (engine.recorder, progress, HookRunner(), *observers)
        engine.observers = Observers(o for o in subscribers if o is not None)
        try:
            with sigterm_cancels(engine.cancellation):
                state = _run_top_level(engine, chosen, progress)
        finally:
            if engine.recorder is not None:
                engine.recorder.close()
        if engine.cancellation.exit_code is not None:
            raise SystemExit(engine.cancellation.exit_code)  # SIGTERM's end, after the cleanup
        script_runs.note(state)
    return state if return_state else state.result()


def _run_top_level(engine: FlowRunEngine, executor: Executor, progress: ProgressDisplay | None) -> State:
    """Run on a session of its own, always shut down; a cancel request wakes its waits."""
    session = executor.start(on_log=engine.on_log, on_events=engine.on_events)
    engine.cancellation.add_waker(session.interrupt)
    store = engine.recorder.store if engine.recorder is not None else None
    try:
        with CancelWatcher(store, engine.flow_run_id, engine.cancellation, engine.log), progress or nullcontext():
            return engine.run(session, executor_name=repr(executor))
    except CancelRequested:
        return engine.state  # recorded Cancelled
    finally:
        session.shutdown()


def _importing_main_in_spawned_worker() -> bool:
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


class FlowRunEngine:
    """One flow run: its identity, its executor session and its task runs."""

    def __init__(self, flow: Any, parameters: dict[str, Any], parent: FlowRunContext | None) -> None:
        self.flow = flow
        self.parameters = parameters
        self.parent = parent
        # A service that launches the run (`dagrun serve`) may choose its id, to find it later.
        given_id = os.environ.get("DAGRUN_FLOW_RUN_ID") if parent is None else None
        self.flow_run_id = given_id or uuid.uuid4().hex
        self.flow_run_name = flow_run_name(flow, parameters, f"{flow.name}-{self.flow_run_id[:6]}")
        self.session: ExecutorSession | None = None
        self.recorder: RunRecorder | None = None  # also one of `observers`; its lifetime is the run's
        self.observers = Observers(())
        self.started: FlowRunStarted | None = None
        self._run_numbers = itertools.count(1)  # task run ids, unique across the run's attempts
        # Filled by workers' result records; shared with subflows, whose records arrive here too.
        self.content_hashes: dict[str, str] = parent.engine.content_hashes if parent is not None else {}
        self.result_storage = flow.result_storage or (parent.engine.result_storage if parent else None)
        self.tasks: TaskRunTracker | None = None
        self.state = State(StateType.PENDING)
        self.cancellation = parent.engine.cancellation if parent is not None else RunCancellation()
        self.timeout: RunTimeout | None = None  # the current attempt's (`_attempt`)

    def on_log(self, line: LogLine) -> None:
        """Every log line of this run (and its subflows), from any worker, arrives here.
        Known secret values are masked here, before the terminal and the history see them."""
        line = mask_record(line)
        print_log_line(line)
        self.observers.log(line)

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        """Workers' task events of this run and its subflows (any thread): a stored result's
        checksum, which downstream cache keys need, and what the history records live."""
        for event in events:
            if type(event) is TaskRunFinished and event.checksum is not None:
                self.content_hashes[event.task_run_id] = event.checksum
        if self.observers.wants("task_events"):
            self.observers.task_events([_masked(event) for event in events])

    def log(self, level: int, message: str) -> None:
        sink = self.parent.log_sink if self.parent is not None else self.on_log
        sink(make_log_line(self._context(), level, message, "dagrun.flow_run"))

    def _context(self) -> FlowRunContext:
        return FlowRunContext(
            flow=self.flow,
            flow_run_id=self.flow_run_id,
            flow_run_name=self.flow_run_name,
            engine=self,
            log_sink=self.parent.log_sink if self.parent is not None else self.on_log,
            log_prints=self.flow.log_prints,
        )

    def run(self, session: ExecutorSession, executor_name: str | None = None) -> State:
        self.session = session
        self.started = FlowRunStarted(
            self.flow_run_id, self.flow_run_name, self.flow, self.parameters,
            self.parent.flow_run_id if self.parent is not None else None,
            executor_name or "shared with the parent", session.address, time.time(),
        )
        self.observers.flow_run_started(self.started)
        where = f" on {session.address}" if session.address else ""
        kind = "subflow run" if self.parent is not None else "flow run"
        self.log(logging.INFO, f"Beginning {kind} '{self.flow_run_name}' for flow '{self.flow.name}'{where}")
        started = time.time()
        self._enter(State(StateType.RUNNING, start_time=started))
        policy = self.flow.retry_policy
        reusable: dict = {}
        attempt = 1
        while True:
            try:
                state = self._attempt(reusable, keep_completed=attempt <= policy.retries)
            except KeyboardInterrupt:
                self._finish(
                    State(StateType.CANCELLED, message="Cancelled by Ctrl-C", start_time=started, end_time=time.time())
                )
                raise
            except CancelRequested as request:
                reason = str(request)
                self._finish(
                    State(
                        StateType.CANCELLED, message=reason, exception=CancelledRunError(reason),
                        start_time=started, end_time=time.time(),
                    )
                )
                raise
            except FlowTimeoutError as timeout:  # an enclosing run's: it ends that run too
                self._finish(
                    State(
                        StateType.FAILED, message=str(timeout), exception=timeout,
                        start_time=started, end_time=time.time(),
                    )
                )
                raise
            timed_out = isinstance(state.exception, FlowTimeoutError) and self.timeout.expired() is self.timeout
            if state.is_completed() or state.is_cancelled() or timed_out or attempt > policy.retries:
                break
            delay = policy.delay_for(attempt)
            retry = (
                f"Retry {attempt}/{policy.retries} of flow '{self.flow.name}' in {delay:.1f} s "
                f"after {type(state.exception).__name__}: {state.exception}"
            )
            self.log(logging.WARNING, retry)
            self._publish(State(StateType.RETRYING, message=retry, start_time=started))
            reusable = {(run.task.name, run.index): run for run in self.tasks.runs if run.state.type is StateType.COMPLETED}
            self.cancellation.sleep(delay)
            attempt += 1
            self._publish(State(StateType.RUNNING, start_time=started))
        if self.recorder is not None and self.parent is None and self.recorder.awaiting_workers():
            session.flush_events()  # the history has every task's end before the run's
        return self._finish(
            State(
                state.type, message=state.message, data=state.data, exception=state.exception,
                start_time=started, end_time=time.time(), custom_name=state.custom_name,
            )
        )

    def _finish(self, state: State) -> State:
        """Record the final state: log it, store it, run hooks and notifiers (once: a repeat of
        the final state changes nothing)."""
        if self._enter(state) is not state:
            return self.state
        if self.tasks is not None and self.tasks.planner is not None:
            self.tasks.planner.save_explanations()
        level = logging.INFO if state.is_completed() else logging.ERROR
        named = f"{state.name} ({state.type.value})" if state.name != state.type.value else state.name
        self.log(level, f"Finished in state {named}" + (f": {state.message}" if state.message else ""))
        # The task that failed the run, for hooks and notifiers: none when the run completed (a
        # failure the flow handled is not the run's).
        failure = self.tasks.first_failure if self.tasks is not None and not state.is_completed() else None
        self.observers.flow_run_state(
            FlowRunStateChanged(self.started, state, failure.name if failure is not None else None)
        )
        return state

    def _publish(self, state: State) -> None:
        """Enter a state the run goes on from (Retrying, Running again) and tell the observers."""
        self.observers.flow_run_state(FlowRunStateChanged(self.started, self._enter(state)))

    def _enter(self, state: State) -> State:
        """The one place this flow run's state changes, through the flow-run transition table."""
        self.state = transition(self.state, state, run=self, table=FLOW_RUN_TRANSITIONS)
        return self.state

    def __str__(self) -> str:
        return f"flow run '{self.flow_run_name}'"

    def _attempt(self, reusable: dict, keep_completed: bool) -> State:
        """Run the body once and wait for its tasks; returns the attempt's final state."""
        context = self._context()
        enclosing = self.parent.engine.timeout if self.parent is not None else None
        self.timeout = RunTimeout.start(self.flow_run_name, self.flow.timeout_seconds, enclosing)
        tracker = TaskRunTracker(
            self.session,
            flow_run_id=self.flow_run_id,
            flow_run_name=self.flow_run_name,
            run_numbers=self._run_numbers,
            log_sink=context.log_sink,
            log_prints=self.flow.log_prints,
            keep_completed=keep_completed,
            reusable=reusable,
            timeout=self.timeout,
            flow_name=self.flow.name,
            result_storage=self.result_storage,
            content_hashes=self.content_hashes,
            observer=self.observers,
            cancellation=self.cancellation,
            flow_parameters=self.parameters,
        )
        self.tasks = tracker
        if self.flow.log_prints:
            capture_prints()
        try:
            try:
                self.cancellation.check()
                with flow_run_scope(context):  # interrupted at the deadline, async bodies too
                    value = run_interruptibly(self.timeout, call_flow_body, self.flow.fn, self.parameters)
                    tracker.settle_step()  # a step left pending fails as if in the body
                self.timeout.check()
                tracker.wait_all()
            except (KeyboardInterrupt, CancelRequested):
                raise
            except Exception as exc:
                if isinstance(exc, FlowTimeoutError) and self.timeout.expired() is not None:
                    raise  # this run's time (or an enclosing run's) is up; else a subflow's error
                mask_exception(exc)  # the flow body's failure is shown and stored: no secret in it
                tracker.wait_all()  # independent branches finish, so their work is kept
                kind = StateType.CRASHED if isinstance(exc, CrashedError) else StateType.FAILED
                return State(kind, message=_describe(exc), exception=exc)
            return final_state(tracker, value)  # Prefect's rules: see `dagrun.flow_outcome`
        except (KeyboardInterrupt, CancelRequested):
            tracker.cancel()
            self.log(logging.WARNING, f"Flow run '{self.flow_run_name}' cancelled: pending tasks cancelled")
            raise
        except FlowTimeoutError as exc:
            tracker.cancel()
            if self.timeout.expired() is not self.timeout:
                raise  # an enclosing run's timeout: `run` records this run and passes it on
            return State(StateType.FAILED, message=str(exc), exception=exc)


def _masked(event: TaskEvent) -> TaskEvent:
    """A task event with known secret values masked in its text (a failed attempt's error)."""
    if type(event) is not AttemptFailed or not known_values():
        return event
    return event._replace(
        error=mask(event.error), traceback=mask(event.traceback), full_traceback=mask(event.full_traceback),
        message=mask(event.message),
    )


def _describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"
