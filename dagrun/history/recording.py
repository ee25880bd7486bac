"""How each history event is written: the SQL behind `HistoryStore.apply`.

Every function here runs inside a write transaction that the caller opened, takes a list of
events of one type, and writes them with `executemany`; `apply` groups consecutive events of
a type, so a batch of thousands costs a handful of statements while keeping their order.
Values are coerced to plain Python types on the way in: a numpy integer or a Path handed
over by the engine must not make SQLite refuse the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from dagrun.history.events import (
    ACTIVE_STATE_NAMES,
    FINAL_STATE_NAMES,
    FlowRunStarted,
    FlowRunState,
    Heartbeat,
    LogLine,
    TaskRunAttempt,
    TaskRunCreated,
    TaskRunState,
    TaskRunDetails,
    state_name,
)
from dagrun.history.parameters import encode_parameters
from dagrun.history.queries import lost_flow_runs
from dagrun.states import StateType

# The states these writes imply; the database stores their names.
_PENDING, _RUNNING = StateType.PENDING.value, StateType.RUNNING.value
_CACHED, _CRASHED = StateType.CACHED.value, StateType.CRASHED.value

_ACTIVE = ", ".join("?" * len(ACTIVE_STATE_NAMES))

_INSERT_FLOW_STATE = (
    "INSERT INTO states (flow_run_id, task_run_id, state, timestamp, message) "
    "VALUES (?, NULL, ?, ?, ?)"
)
# A task state finds its flow run through the task run's row (the event does not carry it);
# a state for an unknown task run inserts nothing instead of failing the batch.
_INSERT_TASK_STATE = (
    "INSERT INTO states (flow_run_id, task_run_id, state, timestamp, message) "
    "SELECT flow_run_id, id, ?, ?, ? FROM task_runs WHERE id = ?"
)


def record_flow_runs_started(connection: Any, events: Sequence[FlowRunStarted]) -> None:
    connection.executemany(
        "INSERT INTO flow_runs (id, flow_name, flow_run_name, state, state_time, message, "
        "parameters, start_time, parent_flow_run_id, parent_task_run_id, executor, address, "
        "host, pid, deployment, slot, heartbeat, lease_seconds, process_space, process_start) "
        f"VALUES (?, ?, ?, '{_RUNNING}', ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        # The same run started again (a driver resuming it) is running again, not a new row.
        f"ON CONFLICT (id) DO UPDATE SET state = '{_RUNNING}', state_time = excluded.state_time, "
        "end_time = NULL, executor = excluded.executor, address = excluded.address, "
        "host = excluded.host, pid = excluded.pid, heartbeat = excluded.heartbeat, "
        "lease_seconds = excluded.lease_seconds, process_space = excluded.process_space, "
        "process_start = excluded.process_start",
        [
            (
                str(event.flow_run_id),
                str(event.flow_name),
                _text(event.flow_run_name),
                float(event.start_time),
                encode_parameters(event.parameters or {}),
                float(event.start_time),
                _text(event.parent_flow_run_id),
                _text(event.parent_task_run_id),
                _text(event.executor),
                _text(event.address),
                _text(event.host),
                _integer(event.pid),
                _text(event.deployment),
                _text(event.slot),
                float(event.start_time),
                float(event.lease_seconds),
                _text(event.process_space),
                _real(event.process_start),
            )
            for event in events
        ],
    )
    connection.executemany(
        _INSERT_FLOW_STATE,
        [(str(event.flow_run_id), _RUNNING, float(event.start_time), "") for event in events],
    )


def record_flow_run_states(connection: Any, events: Sequence[FlowRunState]) -> None:
    rows = []
    for event in events:
        state = _state(event.state)
        final = state in FINAL_STATE_NAMES
        timestamp = float(event.timestamp)
        error, traceback = _text(event.error), _text(event.traceback)
        full_traceback = _text(event.full_traceback)
        rows.append(
            (
                state,
                timestamp,
                str(event.message or ""),
                timestamp if final else None,
                # A final state is the whole story: Completed after a failed attempt clears
                # the error; a non-final state only adds one.
                int(final), error, error,
                int(final), traceback, traceback,
                int(final), full_traceback, full_traceback,
                str(event.flow_run_id),
            )
        )
    connection.executemany(
        "UPDATE flow_runs SET state = ?, state_time = ?, message = ?, end_time = ?, "
        "error = CASE WHEN ? = 1 THEN ? ELSE COALESCE(?, error) END, "
        "traceback = CASE WHEN ? = 1 THEN ? ELSE COALESCE(?, traceback) END, "
        "full_traceback = CASE WHEN ? = 1 THEN ? ELSE COALESCE(?, full_traceback) END "
        "WHERE id = ?",
        rows,
    )
    connection.executemany(
        _INSERT_FLOW_STATE, [(row[-1], row[0], row[1], row[2]) for row in rows]
    )


def record_task_runs_created(connection: Any, events: Sequence[TaskRunCreated]) -> None:
    connection.executemany(
        "INSERT INTO task_runs (id, flow_run_id, task_name, task_run_name, state, state_time, "
        f"message, created, cache_key) VALUES (?, ?, ?, ?, '{_PENDING}', ?, '', ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        [
            (
                str(event.task_run_id),
                str(event.flow_run_id),
                str(event.task_name),
                _text(event.task_run_name),
                float(event.created),
                float(event.created),
                _text(event.cache_key),
            )
            for event in events
        ],
    )
    edges = [
        (str(event.flow_run_id), str(event.task_run_id), str(upstream_id), position)
        for event in events
        for position, upstream_id in enumerate(event.upstream or ())
    ]
    if edges:
        connection.executemany(
            "INSERT INTO task_run_upstream (flow_run_id, task_run_id, upstream_id, position) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (task_run_id, upstream_id) DO NOTHING",
            edges,
        )
    connection.executemany(
        _INSERT_TASK_STATE,
        [(_PENDING, float(event.created), "", str(event.task_run_id)) for event in events],
    )


def record_task_run_states(connection: Any, events: Sequence[TaskRunState]) -> None:
    rows = []
    for event in events:
        state = _state(event.state)
        final = state in FINAL_STATE_NAMES
        timestamp = float(event.timestamp)
        cache_hit = event.cache_hit
        if cache_hit is None and state == _CACHED:
            cache_hit = True
        error, traceback = _text(event.error), _text(event.traceback)
        full_traceback = _text(event.full_traceback)
        end_time = _real(event.end_time)
        attempt = _integer(event.attempt)
        rows.append(
            (
                state,
                timestamp,
                str(event.message or ""),
                attempt, attempt,
                _text(event.worker),
                None if cache_hit is None else int(bool(cache_hit)),
                _integer(event.result_size),
                # start: the worker's own clock if given, else the first Running state's time.
                _real(event.start_time), timestamp if state == _RUNNING else None,
                # end: open while the run is not final (a retried run is running again).
                int(final), end_time, timestamp, end_time,
                int(final), error, error,
                int(final), traceback, traceback,
                int(final), full_traceback, full_traceback,
                _text(event.cache_key),
                str(event.task_run_id),
            )
        )
    connection.executemany(
        "UPDATE task_runs SET state = ?, state_time = ?, message = ?, "
        "attempts = CASE WHEN attempts < ? THEN ? ELSE attempts END, "
        "worker = COALESCE(?, worker), cache_hit = COALESCE(?, cache_hit), "
        "result_size = COALESCE(?, result_size), "
        "start_time = COALESCE(?, start_time, ?), "
        "end_time = CASE WHEN ? = 1 THEN COALESCE(?, end_time, ?) ELSE ? END, "
        "error = CASE WHEN ? = 1 THEN ? ELSE COALESCE(?, error) END, "
        "traceback = CASE WHEN ? = 1 THEN ? ELSE COALESCE(?, traceback) END, "
        "full_traceback = CASE WHEN ? = 1 THEN ? ELSE COALESCE(?, full_traceback) END, "
        "cache_key = COALESCE(?, cache_key) "
        "WHERE id = ?",
        rows,
    )
    connection.executemany(
        _INSERT_TASK_STATE, [(row[0], row[1], row[2], row[-1]) for row in rows]
    )


def record_task_run_attempts(connection: Any, events: Sequence[TaskRunAttempt]) -> None:
    connection.executemany(
        "INSERT INTO task_run_attempts (task_run_id, attempt, start_time, end_time, error, "
        "traceback, full_traceback) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (task_run_id, attempt) DO UPDATE SET "
        "start_time = COALESCE(excluded.start_time, task_run_attempts.start_time), "
        "end_time = COALESCE(excluded.end_time, task_run_attempts.end_time), "
        "error = COALESCE(excluded.error, task_run_attempts.error), "
        "traceback = COALESCE(excluded.traceback, task_run_attempts.traceback), "
        "full_traceback = COALESCE(excluded.full_traceback, task_run_attempts.full_traceback)",
        [
            (
                str(event.task_run_id),
                int(event.attempt),
                _real(event.start_time),
                _real(event.end_time),
                _text(event.error),
                _text(event.traceback),
                _text(event.full_traceback),
            )
            for event in events
        ],
    )
    connection.executemany(
        "UPDATE task_runs SET attempts = CASE WHEN attempts < ? THEN ? ELSE attempts END "
        "WHERE id = ?",
        [(int(event.attempt), int(event.attempt), str(event.task_run_id)) for event in events],
    )


def record_task_run_details(connection: Any, events: Sequence[TaskRunDetails]) -> None:
    rows = []
    for event in events:
        attempt = _integer(event.attempt)
        rows.append((
            _text(event.worker), _real(event.start_time), _real(event.end_time), attempt, attempt,
            _integer(event.result_size), _text(event.error), _text(event.traceback),
            _text(event.full_traceback), str(event.task_run_id),
        ))
    connection.executemany(
        "UPDATE task_runs SET worker = COALESCE(?, worker), start_time = COALESCE(start_time, ?), "
        "end_time = COALESCE(?, end_time), "
        "attempts = CASE WHEN attempts < ? THEN ? ELSE attempts END, "
        "result_size = COALESCE(?, result_size), error = COALESCE(?, error), "
        "traceback = COALESCE(?, traceback), full_traceback = COALESCE(?, full_traceback) WHERE id = ?",
        rows,
    )
    messages = [(event.message, event.task_run_id) for event in events if event.message]
    if messages:  # a returned state's message (rare): the run's final state row says it too
        connection.executemany("UPDATE task_runs SET message = ? WHERE id = ?", messages)
        connection.executemany(
            "UPDATE states SET message = ? WHERE id = "
            "(SELECT MAX(id) FROM states WHERE task_run_id = ?)",
            messages,
        )


def record_log_lines(connection: Any, events: Sequence[LogLine]) -> None:
    connection.executemany(
        "INSERT INTO logs (flow_run_id, task_run_id, timestamp, level, logger, message) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                str(event.flow_run_id),
                _text(event.task_run_id),
                float(event.timestamp),
                int(event.level),
                _text(event.logger),
                str(event.message),
            )
            for event in events
        ],
    )


def record_heartbeats(connection: Any, events: Sequence[Heartbeat]) -> None:
    connection.executemany(
        "UPDATE flow_runs SET heartbeat = ? WHERE id = ? AND heartbeat < ?",
        [
            (float(event.timestamp), str(event.flow_run_id), float(event.timestamp))
            for event in events
        ],
    )


def crash_lost_runs(connection: Any, now: float) -> int:
    """Mark `Crashed` every unfinished flow run whose driver is gone (seen from its own
    machine) or whose lease expired, and its open task runs."""
    lost = lost_flow_runs(connection, now)
    for run in lost:
        last_seen = run["heartbeat"]
        driver = f"pid {run['pid']} on {run['host']}" if run["host"] else "its driver"
        if run["heartbeat"] + run["lease_seconds"] >= now:  # its process is gone
            message = f"Crashed: the driver ({driver}) is gone; it ended without recording a final state"
        else:
            message = (
                f"Crashed: the driver ({driver}) stopped sending heartbeats; the run was last "
                f"seen {now - last_seen:.1f} s ago and its lease is {run['lease_seconds']:g} s"
            )
        task_message = "Crashed: its flow run's driver died"
        open_tasks = (run["id"], *ACTIVE_STATE_NAMES)
        connection.execute(
            "INSERT INTO states (flow_run_id, task_run_id, state, timestamp, message) "
            f"SELECT flow_run_id, id, '{_CRASHED}', ?, ? FROM task_runs "
            f"WHERE flow_run_id = ? AND state IN ({_ACTIVE}) ORDER BY created, id",
            (now, task_message, *open_tasks),
        )
        # A task run ends when its driver was last seen alive (or when it started, if later).
        connection.execute(
            f"UPDATE task_runs SET state = '{_CRASHED}', state_time = ?, message = ?, "
            "end_time = COALESCE(end_time, CASE WHEN start_time > ? THEN start_time ELSE ? END) "
            f"WHERE flow_run_id = ? AND state IN ({_ACTIVE})",
            (now, task_message, last_seen, last_seen, *open_tasks),
        )
        connection.execute(
            f"UPDATE flow_runs SET state = '{_CRASHED}', state_time = ?, message = ?, end_time = ?, "
            "error = COALESCE(error, ?) WHERE id = ?",
            (now, message, last_seen, message, run["id"]),
        )
        connection.execute(_INSERT_FLOW_STATE, (run["id"], _CRASHED, now, message))
    return len(lost)


def _state(value: Any) -> str:
    # An unknown name is kept as given: refusing it would drop the whole batch.
    return state_name(value) or str(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)


def _real(value: Any) -> float | None:
    return None if value is None else float(value)


RECORDERS: Mapping[type, Callable[[Any, Any], None]] = MappingProxyType(
    {
        FlowRunStarted: record_flow_runs_started,
        FlowRunState: record_flow_run_states,
        TaskRunCreated: record_task_runs_created,
        TaskRunState: record_task_run_states,
        TaskRunAttempt: record_task_run_attempts,
        TaskRunDetails: record_task_run_details,
        LogLine: record_log_lines,
        Heartbeat: record_heartbeats,
    }
)
"""The function that writes each kind of event (`HistoryStore.apply` groups them by kind)."""
