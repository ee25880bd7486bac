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
- Ctrl-C cancels the pending tasks, marks them `Cancelled` and re-raises KeyboardInterrupt.
  `dagrun runs cancel` and SIGTERM do the same without a signal reaching the flow body: they
  set the run's `RunCancellation`, whose `CancelRequested` the body meets at its next task
  call or wait; the run returns its `Cancelled` state (SIGTERM: then exits 143).

State kept: one `FlowRunEngine` per flow run, holding the executor session and the
`TaskRunTracker` of the current attempt (`engine.tasks`, which task calls submit to).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from dagrun.async_support import call_flow_body
from dagrun.call_arguments import resolve_futures
from dagrun.cancellation import RunCancellation, sigterm_cancels
from dagrun.context import FlowRunContext, current_flow_run, flow_run_scope
from dagrun.errors import CancelledRunError, CancelRequested, CrashedError, FlowTimeoutError, ParameterValidationError
from dagrun.executors import resolve_executor
from dagrun.executors.base import Executor, ExecutorSession
from dagrun.flow_outcome import final_state
from dagrun.hooks import run_flow_hooks
from dagrun.log_cap import log_cap_bytes
from dagrun.logs import capture_prints, make_log_line, print_log_line
from dagrun.progress import ProgressDisplay
from dagrun.recorder import CancelWatcher, RunRecorder
from dagrun import script_runs
from dagrun.run_names import flow_run_name
from dagrun.parameters import bind_parameters
from dagrun.secrets import known_values, mask, mask_exception, mask_record
from dagrun.states import State, StateType
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
) -> Any:
    """Run `flow` once to a final state; return its value (or the `State` with return_state).

    `observe(engine)` is called with the run's engine before it starts (the CLI uses it to
    report cache decisions afterwards)."""
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
        engine.recorder = parent.engine.recorder
        state = engine.run(parent.engine.session)
    else:
        log_cap_bytes()  # a bad DAGRUN_LOG_CAP_BYTES fails here, before anything starts
        chosen = resolve_executor(executor, flow.executor)
        engine.recorder = RunRecorder.open()
        try:
            with sigterm_cancels(engine.cancellation):
                state = _run_top_level(engine, chosen)
        finally:
            if engine.recorder is not None:
                engine.recorder.close()
        if engine.cancellation.exit_code is not None:
            raise SystemExit(engine.cancellation.exit_code)  # SIGTERM's end, after the cleanup
        script_runs.note(state)
    return state if return_state else state.result()


def _run_top_level(engine: FlowRunEngine, executor: Executor) -> State:
    """Run on a session of its own, always shut down; a cancel request wakes its waits."""
    session = executor.start(on_log=engine.on_log, on_events=engine.on_events)
    engine.cancellation.add_waker(session.interrupt)
    try:
        with CancelWatcher(engine), ProgressDisplay(engine):
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
        self.recorder: RunRecorder | None = None
        # Filled by workers' result records; shared with subflows, whose records arrive here too.
        self.content_hashes: dict[str, str] = parent.engine.content_hashes if parent is not None else {}
        self.result_storage = flow.result_storage or (parent.engine.result_storage if parent else None)
        self.tasks: TaskRunTracker | None = None
        self.state = State(StateType.PENDING)
        self.cancellation = parent.engine.cancellation if parent is not None else RunCancellation()
        timeout = flow.timeout_seconds
        own_deadline = None if timeout is None else time.monotonic() + timeout
        parent_deadline = parent.engine.tasks.deadline if parent is not None else None
        deadlines = [d for d in (own_deadline, parent_deadline) if d is not None]
        self.deadline = min(deadlines) if deadlines else None

    def on_log(self, line: dict) -> None:
        """Every log line of this run (and its subflows), from any worker, arrives here.
        Known secret values are masked here, before the terminal and the history see them."""
        line = mask_record(line)
        print_log_line(line)
        if self.recorder is not None:
            self.recorder.log(line)

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        """Workers' task events of this run and its subflows (any thread): a stored result's
        checksum, which downstream cache keys need, and what the history records live."""
        for event in events:
            if type(event) is TaskRunFinished and event.checksum is not None:
                self.content_hashes[event.task_run_id] = event.checksum
        if self.recorder is not None:
            self.recorder.task_events([_masked(event) for event in events])

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
        if self.recorder is not None:
            self.recorder.flow_started(self, executor_name or "shared with the parent", session.address)
        where = f" on {session.address}" if session.address else ""
        kind = "subflow run" if self.parent is not None else "flow run"
        self.log(logging.INFO, f"Beginning {kind} '{self.flow_run_name}' for flow '{self.flow.name}'{where}")
        started = time.time()
        self.state = State(StateType.RUNNING, start_time=started)
        policy = self.flow.retry_policy
        reusable: dict = {}
        attempt = 1
        while True:
            try:
                state = self._attempt(reusable, keep_completed=attempt <= policy.retries)
            except KeyboardInterrupt:
                self._finish(State(StateType.CANCELLED, message="Cancelled", start_time=started, end_time=time.time()))
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
            if state.is_completed() or state.is_cancelled() or attempt > policy.retries:
                break
            delay = policy.delay_for(attempt)
            self.log(
                logging.WARNING,
                f"Retry {attempt}/{policy.retries} of flow '{self.flow.name}' in {delay:.1f} s "
                f"after {type(state.exception).__name__}: {state.exception}",
            )
            reusable = {(run.task.name, run.index): run for run in self.tasks.runs if run.state.type is StateType.COMPLETED}
            self.cancellation.sleep(delay)
            attempt += 1
        if self.recorder is not None and self.parent is None and self.recorder.awaiting_workers():
            session.flush_events()  # the history has every task's end before the run's
        return self._finish(
            State(
                state.type, message=state.message, data=state.data, exception=state.exception,
                start_time=started, end_time=time.time(),
            )
        )

    def _finish(self, state: State) -> State:
        """Record the final state: log it, store it, run hooks and notifiers."""
        self.state = state
        if self.tasks is not None and self.tasks.planner is not None:
            self.tasks.planner.save_explanations()
        level = logging.INFO if state.is_completed() else logging.ERROR
        self.log(level, f"Finished in state {state.name}" + (f": {state.message}" if state.message else ""))
        if self.recorder is not None:
            self.recorder.flow_state(self.flow_run_id, state)
        run_flow_hooks(self, state)
        return state

    def _attempt(self, reusable: dict, keep_completed: bool) -> State:
        """Run the body once and wait for its tasks; returns the attempt's final state."""
        context = self._context()
        tracker = TaskRunTracker(
            self.session,
            flow_run_id=self.flow_run_id,
            flow_run_name=self.flow_run_name,
            log_sink=context.log_sink,
            log_prints=self.flow.log_prints,
            keep_completed=keep_completed,
            reusable=reusable,
            deadline=self.deadline,
            flow_name=self.flow.name,
            result_storage=self.result_storage,
            content_hashes=self.content_hashes,
            recorder=self.recorder,
            cancellation=self.cancellation,
            flow_parameters=self.parameters,
        )
        self.tasks = tracker
        if self.flow.log_prints:
            capture_prints()
        try:
            try:
                self.cancellation.check()
                with flow_run_scope(context):
                    value = call_flow_body(self.flow.fn, self.parameters)  # async bodies too
                    tracker.settle_step()  # a step left pending fails as if in the body
                tracker.check_deadline()
                tracker.wait_all()
            except (KeyboardInterrupt, CancelRequested):
                raise
            except FlowTimeoutError:
                raise
            except Exception as exc:
                mask_exception(exc)  # the flow body's failure is shown and stored: no secret in it
                tracker.wait_all()  # independent branches finish, so their work is kept
                kind = StateType.CRASHED if isinstance(exc, CrashedError) else StateType.FAILED
                return State(kind, message=_describe(exc), exception=exc)
            return final_state(tracker, value)  # Prefect's rules: see `dagrun.flow_outcome`
        except (KeyboardInterrupt, CancelRequested) as stop:
            tracker.cancel()
            reason = str(stop) if isinstance(stop, CancelRequested) else "Cancelled by Ctrl-C"
            self.state = State(StateType.CANCELLED, message=reason)
            self.log(logging.WARNING, f"Flow run '{self.flow_run_name}' cancelled: pending tasks cancelled")
            raise
        except FlowTimeoutError as exc:
            tracker.cancel()
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
