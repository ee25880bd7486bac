"""Read queries over the run history, returning plain dicts ready for the CLI and JSON API.

Each function takes an open DB-API connection whose rows are dicts (see `dialect`) and only
reads; `HistoryStore` wraps them in a read transaction so one answer is one snapshot.
Times are epoch seconds; `duration` is `end_time - start_time` (None until both are known);
`parameters` are decoded from their stored JSON.
"""

from __future__ import annotations

import json
import logging
import socket
import statistics
from typing import Any

from dagrun.history.drivers import driver_is_gone, process_space
from dagrun.history.events import ACTIVE_STATE_NAMES, FINAL_STATE_NAMES
from dagrun.states import StateType

Row = dict[str, Any]

_ACTIVE = ", ".join("?" * len(ACTIVE_STATE_NAMES))

_FLOW_RUN_SUMMARY = (
    "id, flow_name, flow_run_name, state, message, start_time, end_time, parameters, "
    "deployment, slot, parent_flow_run_id"
)
_FLOW_RUN_DETAIL = (
    _FLOW_RUN_SUMMARY
    + ", parent_task_run_id, executor, address, host, pid, heartbeat, lease_seconds, "
    "cancel_requested, error, traceback, full_traceback"
)
_TASK_RUN_COLUMNS = (
    "id, flow_run_id, task_name, task_run_name, state, message, created, start_time, end_time, "
    "attempts, cache_key, cache_hit, worker, result_size, error, traceback, full_traceback"
)


def flow_runs(
    connection: Any, *, flow_name: str | None, state: str | None, limit: int | None
) -> list[Row]:
    """Flow runs, newest first, optionally of one flow and in one state."""
    where: list[str] = []
    parameters: list[Any] = []
    if flow_name is not None:
        where.append("flow_name = ?")
        parameters.append(flow_name)
    if state is not None:
        where.append("state = ?")
        parameters.append(state)
    sql = f"SELECT {_FLOW_RUN_SUMMARY} FROM flow_runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY start_time DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        parameters.append(int(limit))
    return [_flow_run(row) for row in connection.execute(sql, parameters).fetchall()]


def flow_run(connection: Any, flow_run_id: str) -> Row | None:
    """One flow run with its task runs, subflow runs and state history."""
    row = connection.execute(
        f"SELECT {_FLOW_RUN_DETAIL} FROM flow_runs WHERE id = ?", (flow_run_id,)
    ).fetchone()
    if row is None:
        return None
    run = _flow_run(row)
    run["cancel_requested"] = row["cancel_requested"] is not None
    run["state_history"] = _state_history(connection, flow_run_id, None)
    upstream: dict[str, list[str]] = {}
    for edge in connection.execute(
        "SELECT task_run_id, upstream_id FROM task_run_upstream WHERE flow_run_id = ? "
        "ORDER BY task_run_id, position",
        (flow_run_id,),
    ):
        upstream.setdefault(edge["task_run_id"], []).append(edge["upstream_id"])
    run["task_runs"] = [
        _task_run(task, upstream.get(task["id"], []))
        for task in connection.execute(
            f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE flow_run_id = ? "
            "ORDER BY created, id",
            (flow_run_id,),
        )
    ]
    run["subflow_runs"] = connection.execute(
        "SELECT id, flow_name, flow_run_name, state, parent_task_run_id FROM flow_runs "
        "WHERE parent_flow_run_id = ? ORDER BY start_time, id",
        (flow_run_id,),
    ).fetchall()
    return run


def task_run(connection: Any, task_run_id: str) -> Row | None:
    """One task run with its upstream ids (and, in `upstream_runs`, their names and states, so
    a page can name them), each attempt and its state history."""
    row = connection.execute(
        f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?", (task_run_id,)
    ).fetchone()
    if row is None:
        return None
    upstream_runs = connection.execute(
        "SELECT task_run_upstream.upstream_id AS id, task_runs.task_run_name, task_runs.state "
        "FROM task_run_upstream LEFT JOIN task_runs ON task_runs.id = task_run_upstream.upstream_id "
        "WHERE task_run_upstream.task_run_id = ? ORDER BY task_run_upstream.position",
        (task_run_id,),
    ).fetchall()
    run = _task_run(row, [edge["id"] for edge in upstream_runs])
    run["upstream_runs"] = upstream_runs
    attempts = connection.execute(
        "SELECT attempt, start_time, end_time, error, traceback, full_traceback FROM task_run_attempts "
        "WHERE task_run_id = ? ORDER BY attempt",
        (task_run_id,),
    ).fetchall()
    if not attempts and row["start_time"] is not None:
        # A run whose first attempt succeeded (or is running) is its own single attempt: no row.
        attempts = [{"attempt": 1, "start_time": row["start_time"], "end_time": row["end_time"],
                     "error": row["error"], "traceback": row["traceback"], "full_traceback": row["full_traceback"]}]
    run["attempt_history"] = [attempt | {"duration": _duration(attempt)} for attempt in attempts]
    run["state_history"] = _state_history(connection, row["flow_run_id"], task_run_id)
    return run


def logs(
    connection: Any,
    flow_run_id: str,
    *,
    task_name: str | None,
    after_id: int,
    limit: int | None,
) -> list[Row]:
    """The flow run's log lines after `after_id`, in the order they arrived."""
    sql = (
        "SELECT logs.id, logs.timestamp, logs.level, logs.logger, logs.task_run_id, "
        "task_runs.task_name, task_runs.task_run_name, logs.message "
        "FROM logs LEFT JOIN task_runs ON task_runs.id = logs.task_run_id "
        "WHERE logs.flow_run_id = ? AND logs.id > ?"
    )
    parameters: list[Any] = [flow_run_id, int(after_id)]
    if task_name is not None:
        # Either the task's name ("extract") or one run's name ("extract-3") selects lines.
        sql += " AND (task_runs.task_name = ? OR task_runs.task_run_name = ?)"
        parameters += [task_name, task_name]
    sql += " ORDER BY logs.id"
    if limit is not None:
        sql += " LIMIT ?"
        parameters.append(int(limit))
    lines: list[Row] = connection.execute(sql, parameters).fetchall()
    for line in lines:
        line["level_name"] = logging.getLevelName(line["level"])
    return lines


def flow_stats(connection: Any) -> list[Row]:
    """Per flow: run count, success rate, last and median duration, last state.

    `success_rate` is the share of finished runs that `Completed` (None before any finished);
    `median_duration` is over completed runs, since a run that failed early says little
    about how long the flow takes; `last_duration` is the newest finished run's.
    """
    stats: dict[str, Row] = {}
    completed_durations: dict[str, list[float]] = {}
    for run in connection.execute(
        "SELECT flow_name, state, start_time, end_time FROM flow_runs "
        "ORDER BY flow_name, start_time, id"
    ):
        flow = stats.setdefault(
            run["flow_name"],
            {"flow_name": run["flow_name"], "run_count": 0, "finished": 0, "completed": 0,
             "last_duration": None, "last_state": None, "last_start_time": None},
        )
        flow["run_count"] += 1
        flow["last_state"] = run["state"]
        flow["last_start_time"] = run["start_time"]
        if run["state"] in FINAL_STATE_NAMES:
            flow["finished"] += 1
            flow["last_duration"] = _duration(run)
        if run["state"] == StateType.COMPLETED.value:
            flow["completed"] += 1
            duration = _duration(run)
            if duration is not None:
                completed_durations.setdefault(run["flow_name"], []).append(duration)
    result = []
    for name, flow in stats.items():
        finished, completed = flow.pop("finished"), flow.pop("completed")
        flow["success_rate"] = completed / finished if finished else None
        durations = completed_durations.get(name)
        flow["median_duration"] = statistics.median(durations) if durations else None
        result.append(flow)
    return result


def lost_flow_runs(connection: Any, now: float) -> list[Row]:
    """Unfinished flow runs whose driver is lost: its lease ran out, or it ran in this
    machine's process space (see `drivers`) and its process is gone. Cheap: it reads only
    the few runs in a non-final state, and looks up only this machine's drivers.

    A run a `dagrun serve` started is left to its service, which settles it with how its
    process ended (exit code, last output); only its lease ends it without the service."""
    space = process_space()
    rows = connection.execute(
        "SELECT id, heartbeat, lease_seconds, host, pid, process_start FROM flow_runs "
        f"WHERE state IN ({_ACTIVE}) AND (heartbeat + lease_seconds < ? OR "
        "(host = ? AND process_space = ? AND pid IS NOT NULL AND process_start IS NOT NULL "
        "AND deployment IS NULL))",
        (*ACTIVE_STATE_NAMES, now, socket.gethostname(), space),
    ).fetchall()
    return [
        row for row in rows
        if row["heartbeat"] + row["lease_seconds"] < now or driver_is_gone(row["pid"], row["process_start"])
    ]


def ids_with_prefix(connection: Any, table: str, prefix: str, limit: int) -> list[str]:
    """Up to `limit` ids in `table` ("flow_runs" or "task_runs") starting with `prefix`."""
    if table not in ("flow_runs", "task_runs"):
        raise ValueError(f"not a run table: {table!r}")
    # A range on the primary key instead of LIKE: it uses the index, is case-sensitive on
    # every database, and needs no escaping of '%' and '_' in what the user typed.
    rows = connection.execute(
        f"SELECT id FROM {table} WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
        (prefix, prefix + "\U0010ffff", limit),
    ).fetchall()
    return [row["id"] for row in rows]


def _flow_run(row: Row) -> Row:
    run = dict(row)
    run["duration"] = _duration(row)
    try:
        run["parameters"] = json.loads(row["parameters"] or "{}")
    except ValueError:  # written by something other than dagrun; show it rather than fail
        run["parameters"] = {"<unreadable parameters>": row["parameters"]}
    return run


def _task_run(row: Row, upstream: list[str]) -> Row:
    run = dict(row)
    run["duration"] = _duration(row)
    run["cache_hit"] = None if row["cache_hit"] is None else bool(row["cache_hit"])
    run["upstream"] = upstream
    return run


def _state_history(connection: Any, flow_run_id: str, task_run_id: str | None) -> list[Row]:
    sql = "SELECT state, timestamp, message FROM states WHERE flow_run_id = ? AND task_run_id "
    if task_run_id is None:
        sql += "IS NULL ORDER BY id"
        parameters: tuple[str, ...] = (flow_run_id,)
    else:
        sql += "= ? ORDER BY id"
        parameters = (flow_run_id, task_run_id)
    rows: list[Row] = connection.execute(sql, parameters).fetchall()
    return rows


def _duration(row: Row) -> float | None:
    if row["start_time"] is None or row["end_time"] is None:
        return None
    return float(row["end_time"] - row["start_time"])
