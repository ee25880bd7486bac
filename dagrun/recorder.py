"""Recording runs in the run history, off the hot path.

The engine tells a `RunRecorder`, one of its `RunObserver`s, what happens (a flow run started,
a task run was created, reached a state, logged a line); the recorder turns each fact into a small history event and
hands it to the `HistoryWriter` thread, which writes them in batches. Nothing here blocks on
the database. If the history cannot be opened, one warning is logged and runs go unrecorded:
a flow never fails because of its history.

Workers report what only they know (when each attempt started and ended, on which worker)
as task events (`dagrun.task_events`) on a channel of their own; `task_events` hands them to
`LiveTaskRuns`, which records them as they arrive, so the history shows a task `Running`
while it runs and its final state soon after it ends, and merges them with the engine's own
final states (`task_state`).

`DAGRUN_HISTORY=off` turns recording off (benchmarks compare both).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from dagrun.cancellation import RUNS_CANCEL_REASON, RunCancellation
from dagrun.history import HistoryStore, HistoryWriter
from dagrun.history.drivers import this_process
from dagrun.history.events import (
    FlowRunStarted,
    FlowRunState,
    LogLine,
    TaskRunCreated,
    TaskRunState,
)
from dagrun.live_history import LiveTaskRuns
from dagrun.logs import LogLine as RunLogLine
from dagrun.observers import FlowRunStateChanged, RunObserver
from dagrun.observers import FlowRunStarted as FlowRunBegan
from dagrun.run_names import task_run_name
from dagrun.states import State, StateType
from dagrun.task_events import TaskEvent
from dagrun.task_run_record import TaskRun
from dagrun.tracebacks import views_of

logger = logging.getLogger("dagrun.history")


def lease_seconds() -> float:
    """How long a run may go without its driver's heartbeat before it is shown Crashed."""
    try:
        return max(1.0, float(os.environ.get("DAGRUN_LEASE_SECONDS", "30")))
    except ValueError:
        return 30.0


def history_enabled() -> bool:
    return os.environ.get("DAGRUN_HISTORY", "on").strip().lower() not in {"0", "off", "false", "no"}


class RunRecorder(RunObserver):
    """Feeds one top-level flow run (and its subflows) to the run history."""

    def __init__(self, writer: HistoryWriter, store: HistoryStore) -> None:
        self._writer = writer
        self.store = store
        self._live = LiveTaskRuns(writer.submit)

    @classmethod
    def open(cls) -> RunRecorder | None:
        """A recorder on `DAGRUN_DATABASE_URL` / `$DAGRUN_HOME/dagrun.db`, or None (warned)."""
        if not history_enabled():
            return None
        try:
            store = HistoryStore.from_env()
            store.mark_lost_runs()  # a run whose driver died is shown Crashed, not Running
        except Exception as exc:  # noqa: BLE001 - the flow must run without its history
            logger.warning("Run history unavailable, this run is not recorded: %s", exc)
            return None
        return cls(HistoryWriter(store), store)

    def close(self) -> None:
        """Write everything submitted so far, then stop the writer thread."""
        self._writer.close()
        self.store.close()

    # ---------------------------------------------------------------- flow runs
    def flow_run_started(self, event: FlowRunBegan) -> None:
        top_level = event.parent_flow_run_id is None
        self._live.add_flow_run(event.flow_run_id)
        process_space, process_start = this_process()
        self._writer.submit(
            FlowRunStarted(
                flow_run_id=event.flow_run_id,
                flow_name=event.flow.name,
                flow_run_name=event.flow_run_name,
                parameters=dict(event.parameters),
                start_time=event.start_time,
                parent_flow_run_id=event.parent_flow_run_id,
                parent_task_run_id=None,
                executor=event.executor,
                address=event.address,
                host=socket.gethostname(),
                pid=os.getpid(),
                deployment=os.environ.get("DAGRUN_DEPLOYMENT") if top_level else None,
                slot=os.environ.get("DAGRUN_DEPLOYMENT_SLOT") if top_level else None,
                lease_seconds=lease_seconds(),
                process_space=process_space,
                process_start=process_start,
            )
        )

    def flow_run_state(self, event: FlowRunStateChanged) -> None:
        state = event.state
        error, trace, full = _error_fields(state.exception)
        self._writer.submit(
            FlowRunState(event.run.flow_run_id, state.type.value, time.time(), _message(state), error, trace, full)
        )

    # ---------------------------------------------------------------- task runs
    def task_run_created(self, run: TaskRun, flow_run_id: str) -> None:
        self._writer.submit(
            TaskRunCreated(
                run.id, flow_run_id, run.task.name, task_run_name(run.task, run.args, run.kwargs, run.name),
                tuple(up.id for up in run.upstream), run.cache_key, time.time(),
            )
        )

    def task_run_state(self, run: TaskRun, state: State, flow_run_id: str) -> None:
        """A task run's final state, as the engine classified it (merged with what its worker
        reported, see `LiveTaskRuns`)."""
        self._live.engine_state(run.id, state.type, lambda: _task_run_state(run, state))

    def task_attempt_lost(self, run: TaskRun, error: str) -> None:
        """An attempt of `run` ended with its worker (the run is being submitted again)."""
        self._live.attempt_lost(run.id, error)

    def task_events(self, events: Sequence[TaskEvent]) -> None:
        """A batch of workers' task events, times on this process's clock (any thread)."""
        self._live.worker_events(events)

    def awaiting_workers(self) -> bool:
        """Whether workers' reports on runs already final are still on their way (see
        `ExecutorSession.flush_events`); False when every report is in."""
        return self._live.awaiting_workers()

    def log(self, line: RunLogLine) -> None:
        self._writer.submit(
            LogLine(
                line["flow_run_id"], line.get("task_run_id"), line["timestamp"], line["level"],
                line.get("logger", "dagrun"), line["message"],
            )
        )


def _task_run_state(run: TaskRun, state: State) -> TaskRunState:
    # At least one attempt: the worker's report, if it comes, may say how many more.
    attempts = 1 if state.type in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED) else None
    not_run = state.type is StateType.NOT_RUN
    error, trace, full = (state.message, None, None) if not_run else _error_fields(state.exception)
    return TaskRunState(
        task_run_id=run.id,
        state=state.type.value,
        timestamp=state.timestamp or time.time(),
        message=_message(state),
        attempt=attempts,
        error=error,
        traceback=trace,
        full_traceback=full,
        cache_hit=True if state.type is StateType.CACHED else (False if run.cache_key else None),
        cache_key=run.cache_key,
    )


def _message(state: State) -> str:
    """The message the history records: a custom state name (`Completed(name="Skipped")`)
    leads it, as the state column holds the type the dashboard and the CLI work on."""
    if state.name == state.type.value:
        return state.message
    return f"{state.name}: {state.message}" if state.message else state.name


def _error_fields(exception: BaseException | None) -> tuple[str | None, str | None, str | None]:
    """(error, the user's traceback, the full traceback) of a failed run."""
    if exception is None:
        return None, None, None
    views = views_of(exception)
    return f"{type(exception).__name__}: {exception}", views.user, views.full


class CancelWatcher:
    """While a top-level run is going, polls the history for `dagrun runs cancel ID` and, when
    asked, cancels the run through its `RunCancellation`: the run's waits wake at once and it
    takes the Ctrl-C path (pending tasks cancelled, states Cancelled, local cluster stopped)
    without any signal, so a driver that ignores SIGINT (`dagrun run ... &`) stops too."""

    def __init__(
        self, store: HistoryStore | None, flow_run_id: str, cancellation: RunCancellation,
        log: Callable[[int, str], None], interval: float = 1.0,
    ) -> None:
        self._store = store
        self._flow_run_id = flow_run_id
        self._cancellation = cancellation
        self._log = log
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CancelWatcher:
        if self._store is not None:
            self._thread = threading.Thread(target=self._watch, args=(self._store,), daemon=True, name="dagrun-cancel")
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self, store: HistoryStore) -> None:
        while not self._stop.wait(self._interval):
            try:
                requested = store.cancel_requested(self._flow_run_id)
            except Exception:  # noqa: BLE001 - a busy or vanished database: ask again later
                continue
            if requested:
                self._log(logging.WARNING, "Cancel requested: cancelling the flow run")
                self._cancellation.request(RUNS_CANCEL_REASON)
                return
