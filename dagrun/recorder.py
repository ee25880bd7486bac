"""Recording runs in the run history, off the hot path.

The engine tells a `RunRecorder` what happens (a flow run started, a task run was created,
reached a state, logged a line); the recorder turns each fact into a small history event and
hands it to the `HistoryWriter` thread, which writes them in batches. Nothing here blocks on
the database. If the history cannot be opened, one warning is logged and runs go unrecorded:
a flow never fails because of its history.

Workers report what only they know (when an attempt started, on which worker, how many
attempts it took) as `running` / `retrying` / `finished` records through the same channel
as log lines; `worker_record` folds them into the task run's history.

`DAGRUN_HISTORY=off` turns recording off (benchmarks compare both).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from dagrun.cancellation import RUNS_CANCEL_REASON
from dagrun.history import HistoryStore, HistoryWriter
from dagrun.history.drivers import this_process
from dagrun.history.events import (
    FlowRunStarted,
    FlowRunState,
    LogLine,
    TaskRunAttempt,
    TaskRunCreated,
    TaskRunState,
    TaskRunTimings,
)
from dagrun.run_names import task_run_name
from dagrun.states import State, StateType
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


class RunRecorder:
    """Feeds one top-level flow run (and its subflows) to the run history."""

    def __init__(self, writer: HistoryWriter, store: HistoryStore) -> None:
        self._writer = writer
        self.store = store
        self._finished: dict[str, dict] = {}  # task_run_id -> the worker's `finished` record
        self._retries: dict[str, int] = {}  # task_run_id -> attempts that failed and were retried
        # task_run_id -> attempts made before its current submission (each lost with a worker):
        # a resubmitted run's worker counts its attempts from 1 again.
        self._earlier: dict[str, int] = {}

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
    def flow_started(self, engine: Any, executor: str, address: str | None) -> None:
        parent = engine.parent
        process_space, process_start = this_process()
        self._writer.submit(
            FlowRunStarted(
                flow_run_id=engine.flow_run_id,
                flow_name=engine.flow.name,
                flow_run_name=engine.flow_run_name,
                parameters=dict(engine.parameters),
                start_time=time.time(),
                parent_flow_run_id=parent.flow_run_id if parent is not None else None,
                parent_task_run_id=None,
                executor=executor,
                address=address,
                host=socket.gethostname(),
                pid=os.getpid(),
                deployment=os.environ.get("DAGRUN_DEPLOYMENT") if parent is None else None,
                slot=os.environ.get("DAGRUN_DEPLOYMENT_SLOT") if parent is None else None,
                lease_seconds=lease_seconds(),
                process_space=process_space,
                process_start=process_start,
            )
        )

    def flow_state(self, flow_run_id: str, state: State) -> None:
        error, trace, full = _error_fields(state.exception)
        self._writer.submit(
            FlowRunState(flow_run_id, state.name, time.time(), state.message, error, trace, full)
        )

    # ---------------------------------------------------------------- task runs
    def task_created(self, run: Any, flow_run_id: str) -> None:
        self._writer.submit(
            TaskRunCreated(
                run.id, flow_run_id, run.task.name, task_run_name(run.task, run.args, run.kwargs, run.name),
                tuple(up.id for up in run.upstream), run.cache_key, time.time(),
            )
        )

    def task_state(self, run: Any, state: State) -> None:
        """A task run's state, with what its worker reported about it."""
        finished = self._finished.pop(run.id, None) or {}
        earlier = self._earlier.pop(run.id, 0)
        attempts = finished.get("attempts")
        if attempts is not None:
            attempts += earlier
        elif state.type in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED):
            attempts = self._retries.get(run.id, 0) + 1
        not_run = state.type is StateType.NOT_RUN
        error, trace, full = (state.message, None, None) if not_run else _error_fields(state.exception)
        retried = self._retries.pop(run.id, None) is not None
        if attempts and (retried or state.type in (StateType.FAILED, StateType.CRASHED)):
            # The last attempt (earlier ones were recorded as they were retried).
            self._writer.submit(
                TaskRunAttempt(
                    run.id, attempts, finished.get("last_attempt_start"), finished.get("end_time") or time.time(),
                    error if state.type is not StateType.COMPLETED else None,
                    trace if state.type is not StateType.COMPLETED else None,
                    full if state.type is not StateType.COMPLETED else None,
                )
            )
        self._writer.submit(
            TaskRunState(
                task_run_id=run.id,
                state=state.name,
                timestamp=state.timestamp or time.time(),
                message=state.message,
                attempt=attempts,
                error=error,
                traceback=trace,
                full_traceback=full,
                worker=finished.get("worker"),
                start_time=finished.get("start_time"),
                cache_hit=True if state.type is StateType.CACHED else (False if run.cache_key else None),
                result_size=finished.get("size"),
                end_time=finished.get("end_time"),
                cache_key=run.cache_key,
            )
        )

    def task_attempt_lost(self, run: Any, error: str) -> None:
        """An attempt of `run` ended with its worker (the run is being submitted again)."""
        now = time.time()
        attempt = self._retries[run.id] = self._earlier[run.id] = self._retries.get(run.id, 0) + 1
        self._writer.submit(TaskRunAttempt(run.id, attempt, None, now, error, None))
        self._writer.submit(TaskRunState(run.id, StateType.RETRYING.value, now, f"Resubmitted after {error}"))

    def task_timings(self, timings: list[tuple[str, str | None, float, float]]) -> None:
        """(task_run_id, worker, start, end) of many task runs, as the executor saw them."""
        if timings:
            self._writer.submit(TaskRunTimings(tuple(timings)))

    def worker_record(self, record: dict) -> None:
        """A `retrying` / `finished` record sent by the worker running a task."""
        kind, task_run_id = record["kind"], record["task_run_id"]
        if kind == "retrying":
            attempt = self._retries[task_run_id] = self._earlier.get(task_run_id, 0) + record["attempt"]
            self._writer.submit(
                TaskRunAttempt(
                    task_run_id, attempt, record["start_time"], record["timestamp"],
                    record.get("error"), record.get("traceback"), record.get("full_traceback"),
                )
            )
            self._writer.submit(
                TaskRunState(task_run_id, StateType.RETRYING.value, record["timestamp"], record.get("message", ""))
            )
        elif kind == "finished":
            self._finished[task_run_id] = record

    def log(self, line: dict) -> None:
        self._writer.submit(
            LogLine(
                line["flow_run_id"], line.get("task_run_id"), line["timestamp"], line["level"],
                line.get("logger", "dagrun"), line["message"],
            )
        )


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

    def __init__(self, engine: Any, interval: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CancelWatcher:
        recorder = self._engine.recorder
        if recorder is not None:
            self._thread = threading.Thread(target=self._watch, args=(recorder.store,), daemon=True, name="dagrun-cancel")
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self, store: HistoryStore) -> None:
        while not self._stop.wait(self._interval):
            try:
                requested = store.cancel_requested(self._engine.flow_run_id)
            except Exception:  # noqa: BLE001 - a busy or vanished database: ask again later
                continue
            if requested:
                self._engine.log(logging.WARNING, "Cancel requested: cancelling the flow run")
                self._engine.cancellation.request(RUNS_CANCEL_REASON)
                return
