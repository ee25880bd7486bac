"""The SQL that writes deployments, claims and services: what `DeploymentStore` runs inside
its write transactions (each function expects one to be open).

A *claim* is a row of `deployment_runs`: a service's promise to start one run. Its unique
keys (deployment + slot, request id, deployment + trigger + upstream run) are what make a
slot, a manual request or a trigger event start exactly one run, whichever service or
restart gets there first; the write transaction (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's
advisory lock: writers queue) makes "check the limit, then insert" one step, so
`max_active_runs` holds across services too.

Claim states: `Pending` (claimed, process not started yet) -> `Running` -> a final state,
moved through the flow-run transition table (`dagrun.states`); a claim ends once.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dagrun.states import FLOW_RUN_TRANSITIONS, StateType, check_transition


class ClaimResult(enum.Enum):
    CLAIMED = "claimed"
    """The claim is ours: start the run."""
    TAKEN = "taken"
    """Another service (or an earlier life of this one) claimed it first."""
    FULL = "full"
    """The deployment is at `max_active_runs`: try again later."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a service wants to start: one run of `deployment`, for one reason.

    `reason` is "schedule" (with `slot`), "manual" (with `request_id`) or "trigger" (with
    `trigger_key` and `upstream_run_id`). `id` becomes the flow run's id (DAGRUN_FLOW_RUN_ID).
    """

    id: str
    deployment: str
    reason: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    slot: str | None = None
    request_id: int | None = None
    trigger_key: str | None = None
    upstream_run_id: str | None = None


def register_deployment(
    connection: Any,
    row: Mapping[str, Any],
    triggers: Sequence[Mapping[str, Any]],
    now: float,
    history_now: float,
) -> bool:
    """Insert or update one deployment and replace its triggers; True if it is new.

    A re-registered deployment keeps `registered_at`, `last_slot` and its `paused` flag (pause
    and resume own that once it exists), and each trigger that did not change keeps `since`.
    """
    existing = connection.execute("SELECT name FROM deployments WHERE name = ?", (row["name"],)).fetchone()
    columns = (
        "flow_name",
        "flow_file",
        "parameters",
        "parameter_schema",
        "schedules",
        "schedule",
        "max_active_runs",
        "catchup",
    )
    if existing is None:
        connection.execute(
            f"INSERT INTO deployments (name, {', '.join(columns)}, paused, registered_at, updated_at) "
            f"VALUES (?, {', '.join('?' * len(columns))}, ?, ?, ?)",
            (row["name"], *(row[column] for column in columns), row["paused"], now, now),
        )
    else:
        connection.execute(
            f"UPDATE deployments SET {', '.join(f'{column} = ?' for column in columns)}, updated_at = ? "
            "WHERE name = ?",
            (*(row[column] for column in columns), now, row["name"]),
        )
    keys = [trigger["trigger_key"] for trigger in triggers]
    for trigger in triggers:
        connection.execute(
            "INSERT INTO deployment_triggers (deployment, trigger_key, after_deployment, after_flow, "
            "states, parameter, since) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (deployment, trigger_key) DO NOTHING",
            (
                row["name"],
                trigger["trigger_key"],
                trigger["after_deployment"],
                trigger["after_flow"],
                trigger["states"],
                trigger["parameter"],
                history_now,
            ),
        )
    placeholders = ", ".join("?" * len(keys))
    connection.execute(
        "DELETE FROM deployment_triggers WHERE deployment = ?"
        + (f" AND trigger_key NOT IN ({placeholders})" if keys else ""),
        (row["name"], *keys),
    )
    return existing is None


def claim_run(
    connection: Any, claim: Claim, *, service_id: str, now: float, max_active_runs: int
) -> ClaimResult:
    """Claim `claim` for `service_id` unless it is taken or the deployment is full."""
    if claim.reason == "schedule":
        taken = connection.execute(
            "SELECT id FROM deployment_runs WHERE deployment = ? AND slot = ?", (claim.deployment, claim.slot)
        ).fetchone()
    elif claim.reason == "manual":
        request = connection.execute(
            "SELECT flow_run_id, error FROM deployment_requests WHERE id = ?", (claim.request_id,)
        ).fetchone()
        taken = request is None or request["flow_run_id"] is not None or request["error"] is not None
    elif claim.reason == "trigger":
        taken = connection.execute(
            "SELECT id FROM deployment_runs WHERE deployment = ? AND trigger_key = ? AND upstream_run_id = ?",
            (claim.deployment, claim.trigger_key, claim.upstream_run_id),
        ).fetchone()
    else:
        raise ValueError(f"unknown claim reason {claim.reason!r}")
    if taken:
        if claim.slot is not None:
            _advance_last_slot(connection, claim.deployment, claim.slot)
        return ClaimResult.TAKEN
    if active_claims(connection, claim.deployment) >= max_active_runs:
        return ClaimResult.FULL  # the slot stays due: it runs when a run ends, or a newer one does
    if claim.slot is not None:
        _advance_last_slot(connection, claim.deployment, claim.slot)
    connection.execute(
        "INSERT INTO deployment_runs (id, deployment, reason, slot, request_id, trigger_key, "
        "upstream_run_id, parameters, service_id, claimed_at, state) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{StateType.PENDING.value}')",
        (
            claim.id,
            claim.deployment,
            claim.reason,
            claim.slot,
            claim.request_id,
            claim.trigger_key,
            claim.upstream_run_id,
            json.dumps(dict(claim.parameters)),
            service_id,
            now,
        ),
    )
    if claim.request_id is not None:
        connection.execute(
            "UPDATE deployment_requests SET flow_run_id = ?, claimed_at = ? WHERE id = ?",
            (claim.id, now, claim.request_id),
        )
    return ClaimResult.CLAIMED


def active_claims(connection: Any, deployment: str) -> int:
    """Runs of `deployment` claimed and not yet ended, by any service."""
    row = connection.execute(
        "SELECT COUNT(*) AS active FROM deployment_runs WHERE deployment = ? AND ended_at IS NULL",
        (deployment,),
    ).fetchone()
    return int(row["active"])


def skip_slot(connection: Any, deployment: str, slot: str) -> None:
    """Count `slot` as handled without running it (the deployment is paused)."""
    _advance_last_slot(connection, deployment, slot)


def _advance_last_slot(connection: Any, deployment: str, slot: str) -> None:
    # Compared as datetimes: isoformat drops zero microseconds, so the strings do not sort.
    row = connection.execute("SELECT last_slot FROM deployments WHERE name = ?", (deployment,)).fetchone()
    if row is None:
        return
    if row["last_slot"] is None or datetime.fromisoformat(row["last_slot"]) < datetime.fromisoformat(slot):
        connection.execute("UPDATE deployments SET last_slot = ? WHERE name = ?", (slot, deployment))


def mark_started(connection: Any, claim_id: str, *, pid: int, host: str, now: float) -> None:
    _check_claim(connection, claim_id, StateType.RUNNING)
    connection.execute(
        "UPDATE deployment_runs SET state = ?, started_at = ?, pid = ?, host = ? WHERE id = ?",
        (StateType.RUNNING.value, now, pid, host, claim_id),
    )


def finish_run(
    connection: Any, claim_id: str, *, state: StateType, now: float, exit_code: int | None, message: str | None
) -> None:
    """End a claim in a final state (what the history says, or what the service saw); a
    claim that already ended keeps its state."""
    if not _check_claim(connection, claim_id, state):
        return
    connection.execute(
        "UPDATE deployment_runs SET state = ?, ended_at = ?, exit_code = ?, message = ? "
        "WHERE id = ? AND ended_at IS NULL",
        (state.value, now, exit_code, message, claim_id),
    )


def _check_claim(connection: Any, claim_id: str, new: StateType) -> bool:
    """Whether the open claim `claim_id` may move to `new` (False: it ended already, or is
    unknown); raises `IllegalTransition` for a move the flow-run table forbids."""
    row = connection.execute(
        "SELECT state FROM deployment_runs WHERE id = ? AND ended_at IS NULL", (claim_id,)
    ).fetchone()
    if row is None:
        return False
    return check_transition(
        StateType(row["state"]), new, run=f"deployment run {claim_id[:8]}", table=FLOW_RUN_TRANSITIONS
    )


def retake_run(connection: Any, claim_id: str, *, old_service: str, new_service: str) -> bool:
    """Take over a claim a dead service made but never started; True if it is ours now."""
    cursor = connection.execute(
        "UPDATE deployment_runs SET service_id = ? WHERE id = ? AND service_id = ? "
        "AND pid IS NULL AND ended_at IS NULL",
        (new_service, claim_id, old_service),
    )
    return bool(cursor.rowcount == 1)


def refuse_request(connection: Any, request_id: int, *, error: str, now: float) -> None:
    connection.execute(
        "UPDATE deployment_requests SET error = ?, claimed_at = ? WHERE id = ? AND flow_run_id IS NULL",
        (error, now, request_id),
    )


def insert_request(
    connection: Any, deployment: str, parameters: Mapping[str, Any], *, requested_by: str, now: float
) -> int:
    row = connection.execute(
        "INSERT INTO deployment_requests (deployment, parameters, requested_at, requested_by) "
        "VALUES (?, ?, ?, ?) RETURNING id",
        (deployment, json.dumps(dict(parameters)), now, requested_by),
    ).fetchone()
    return int(row["id"])


def start_service(
    connection: Any,
    service_id: str,
    *,
    host: str,
    pid: int,
    source: str | None,
    now: float,
    lease_seconds: float,
) -> None:
    connection.execute(
        "INSERT INTO deployment_services (id, host, pid, source, started_at, heartbeat, lease_seconds) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (service_id, host, pid, source, now, now, lease_seconds),
    )


def heartbeat(connection: Any, service_id: str, now: float) -> None:
    connection.execute("UPDATE deployment_services SET heartbeat = ? WHERE id = ?", (now, service_id))


def stop_service(connection: Any, service_id: str, now: float) -> None:
    connection.execute(
        "UPDATE deployment_services SET heartbeat = ?, stopped_at = ? WHERE id = ?", (now, now, service_id)
    )


def set_paused(connection: Any, name: str, paused: bool, now: float) -> bool:
    cursor = connection.execute(
        "UPDATE deployments SET paused = ?, updated_at = ? WHERE name = ?", (int(paused), now, name)
    )
    return bool(cursor.rowcount == 1)
