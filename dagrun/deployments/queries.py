"""Read queries over the deployment tables (and the run history they point into).

Each function takes an open connection whose rows are dicts and only reads; JSON columns
come back decoded. Times are epoch seconds; slots are ISO UTC strings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]

_CLAIM_COLUMNS = (
    "r.id, r.deployment, r.reason, r.slot, r.request_id, r.trigger_key, r.upstream_run_id, "
    "r.parameters, r.service_id, r.claimed_at, r.started_at, r.host, r.pid, r.ended_at, "
    "r.exit_code, r.message, f.id AS flow_run_id, r.state AS claim_state, "
    "COALESCE(f.state, r.state) AS state, f.start_time, f.end_time"
)
# A run records itself under the id its service chose (DAGRUN_FLOW_RUN_ID).
_JOIN_HISTORY = "LEFT JOIN flow_runs f ON f.id = r.id"


def deployments(connection: Any, name: str | None = None) -> list[Row]:
    """Registered deployments by name, JSON columns decoded, flags as bools."""
    sql = "SELECT * FROM deployments"
    parameters: tuple[Any, ...] = ()
    if name is not None:
        sql += " WHERE name = ?"
        parameters = (name,)
    rows = connection.execute(sql + " ORDER BY name", parameters).fetchall()
    for row in rows:
        for column in ("parameters", "parameter_schema", "schedules"):
            row[column] = json.loads(row[column])
        row["paused"] = bool(row["paused"])
        row["catchup"] = bool(row["catchup"])
    return rows


def scheduling_states(connection: Any, names: Sequence[str]) -> dict[str, Row]:
    """Per deployment: `paused`, `last_slot` and `registered_at`, as the service needs them."""
    if not names:
        return {}
    rows = connection.execute(
        "SELECT name, paused, last_slot, registered_at FROM deployments "
        f"WHERE name IN ({', '.join('?' * len(names))})",
        tuple(names),
    ).fetchall()
    return {row["name"]: row | {"paused": bool(row["paused"])} for row in rows}


def pending_requests(connection: Any, names: Sequence[str] | None = None) -> list[Row]:
    """Manual run requests no service has claimed or refused, oldest first."""
    sql = "SELECT * FROM deployment_requests WHERE flow_run_id IS NULL AND error IS NULL"
    parameters: tuple[Any, ...] = ()
    if names is not None:
        if not names:
            return []
        sql += f" AND deployment IN ({', '.join('?' * len(names))})"
        parameters = tuple(names)
    return _decoded(connection.execute(sql + " ORDER BY id", parameters).fetchall())


def requests(connection: Any, deployment: str | None, limit: int | None) -> list[Row]:
    """Manual run requests, newest first, with the state of the run each started."""
    sql = (
        "SELECT q.*, COALESCE(f.state, r.state) AS state FROM deployment_requests q "
        "LEFT JOIN deployment_runs r ON r.id = q.flow_run_id "
        "LEFT JOIN flow_runs f ON f.id = r.id"
    )
    return _listed(connection, sql, "q.deployment", deployment, "q.id DESC", limit)


def claims(connection: Any, deployment: str | None, limit: int | None) -> list[Row]:
    """Runs services claimed, newest first, each with its state in the history if recorded."""
    sql = f"SELECT {_CLAIM_COLUMNS} FROM deployment_runs r {_JOIN_HISTORY}"
    return _listed(connection, sql, "r.deployment", deployment, "r.claimed_at DESC, r.started_at DESC, r.id", limit)


def _listed(
    connection: Any, sql: str, column: str, deployment: str | None, order: str, limit: int | None
) -> list[Row]:
    """`sql`'s rows, of one deployment if given, in `order`, at most `limit`."""
    parameters: list[Any] = []
    if deployment is not None:
        sql += f" WHERE {column} = ?"
        parameters.append(deployment)
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        parameters.append(limit)
    return _decoded(connection.execute(sql, parameters).fetchall())


def triggers(connection: Any, deployment: str) -> list[Row]:
    rows = connection.execute(
        "SELECT after_deployment, after_flow, states, parameter, since FROM deployment_triggers "
        "WHERE deployment = ? ORDER BY trigger_key",
        (deployment,),
    ).fetchall()
    for row in rows:
        row["states"] = json.loads(row["states"])
    return rows


def open_claims_of_dead_services(connection: Any, service_id: str, now: float) -> list[Row]:
    """Claims not ended whose service stopped, or stopped sending heartbeats, or is unknown."""
    return _decoded(
        connection.execute(
            "SELECT r.* FROM deployment_runs r LEFT JOIN deployment_services s ON s.id = r.service_id "
            "WHERE r.ended_at IS NULL AND r.service_id != ? AND (s.id IS NULL OR s.stopped_at IS NOT NULL "
            "OR s.heartbeat + s.lease_seconds < ?) ORDER BY r.claimed_at",
            (service_id, now),
        ).fetchall()
    )


def live_services(connection: Any, now: float) -> list[Row]:
    rows: list[Row] = connection.execute(
        "SELECT id, host, pid, source, started_at, heartbeat FROM deployment_services "
        "WHERE stopped_at IS NULL AND heartbeat + lease_seconds >= ? ORDER BY started_at",
        (now,),
    ).fetchall()
    return rows


def recorded_run(connection: Any, claim: Row) -> Row | None:
    """The history's record of a claimed run (recorded under the id the service gave it)."""
    row: Row | None = connection.execute(
        "SELECT id, state, message, heartbeat, lease_seconds, end_time FROM flow_runs WHERE id = ?",
        (claim["id"],),
    ).fetchone()
    return row


def _decoded(rows: list[Row]) -> list[Row]:
    for row in rows:
        if "parameters" in row and isinstance(row["parameters"], str):
            row["parameters"] = json.loads(row["parameters"])
    return rows
