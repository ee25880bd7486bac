"""`DeploymentStore`: deployments, manual run requests, triggers and run claims, kept in the
run-history database (schema migration 3) so every process that sees the history sees them.

    store = DeploymentStore.from_env()            # the database `dagrun runs ls` reads
    store.register(load_deployments("flows.py"), now)
    store.request_run("nightly", {"day": "2026-11-25"}, requested_by="cli")
    store.set_paused("nightly", True)
    store.summaries(now)                          # what `dagrun deployments ls` shows

| method                                      | does                                          |
|---------------------------------------------|-----------------------------------------------|
| `register(deployments, now)`                | insert or update deployments and triggers     |
| `set_paused(name, paused)`                  | pause / resume scheduled and triggered runs   |
| `request_run(name, parameters, requested_by=)` | queue a manual run for a service           |
| `summaries(now)` / `get(name)`              | deployments with next runs and last states    |
| `claims(deployment=)` / `requests(deployment=)` | what services started, what was asked     |
| `claim(claim, service_id=, now=, max_active_runs=)` | a service claims one run (see `claims`) |

Writes are one write transaction each (SQLite: `BEGIN IMMEDIATE`), like the history's, in
whichever database the history uses (SQLite or PostgreSQL); each thread has its own
connection. The history itself stays `HistoryStore`'s (`store.history`): this store only
reads `flow_runs`, and writes runs through `HistoryStore.apply`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dagrun.deployments import claims as claim_sql
from dagrun.deployments import queries
from dagrun.deployments.claims import Claim, ClaimResult
from dagrun.deployments.declaration import (
    Deployment,
    parameter_schema,
    schedule_from_spec,
    schedule_to_spec,
)
from dagrun.deployments.triggers import Trigger, ended_upstream_runs
from dagrun.errors import ConfigError
from dagrun.history import HistoryStore
from dagrun.history.store import database_url_from_env
from dagrun.states import StateType

UTC = timezone.utc
NEXT_RUNS = 3
"""How many upcoming run times `summaries` lists per deployment."""


class DeploymentStore:
    """Deployments and their runs' claims, in the run-history database (see the module doc)."""

    def __init__(self, url_or_path: str | os.PathLike[str]) -> None:
        """Open the database a path, `sqlite:///path` or `postgresql://` URL names, upgrading
        its schema."""
        # The history store applies the migrations (ours included) and owns the connections.
        self.history = HistoryStore(url_or_path)

    @classmethod
    def from_env(cls) -> DeploymentStore:
        """The store in `DAGRUN_DATABASE_URL`, else `$DAGRUN_HOME/dagrun.db`."""
        return cls(database_url_from_env())

    @property
    def url(self) -> str:
        """What opens this database again (see `HistoryStore.url`: never print it)."""
        return self.history.url

    @property
    def path(self) -> Path | None:
        """The SQLite database file; None for a server database."""
        return self.history.path

    def describe(self) -> str:
        """The database for messages, password masked."""
        return self.history.describe()

    def close(self) -> None:
        self.history.close()

    def __enter__(self) -> DeploymentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeploymentStore({self.describe()!r})"

    # --- registration and control ---

    def register(self, deployments: Sequence[Deployment], now: datetime) -> list[str]:
        """Insert or update `deployments` (one transaction); return the names that were new."""
        rows = [(_deployment_row(deployment), _trigger_rows(deployment)) for deployment in deployments]
        with self._write() as connection:
            return [
                row["name"]
                for row, triggers in rows
                if claim_sql.register_deployment(connection, row, triggers, _epoch(now), time.time())
            ]

    def set_paused(self, name: str, paused: bool) -> None:
        """Pause (no scheduled or triggered runs; due slots are skipped) or resume."""
        with self._write() as connection:
            if not claim_sql.set_paused(connection, name, paused, time.time()):
                raise ConfigError(_unknown(connection, name))

    def request_run(
        self, name: str, parameters: Mapping[str, Any] | None = None, *, requested_by: str = "api"
    ) -> int:
        """Queue a manual run of deployment `name`; a `dagrun serve` serving it starts it.

        `parameters` override the deployment's defaults; the service validates them against
        the flow and refuses the request (`error`) if they do not fit. Returns the request id.
        """
        parameters = dict(parameters or {})
        try:
            json.dumps(parameters, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"deployment {name!r}: parameters must be JSON values: {exc}") from None
        with self._write() as connection:
            if not queries.deployments(connection, name):
                raise ConfigError(_unknown(connection, name))
            return claim_sql.insert_request(
                connection, name, parameters, requested_by=requested_by, now=time.time()
            )

    # --- reads ---

    def get(self, name: str) -> dict[str, Any]:
        """One deployment as stored (no summary); a `ConfigError` naming the known ones if unknown."""
        with self._read() as connection:
            rows = queries.deployments(connection, name)
            if not rows:
                raise ConfigError(_unknown(connection, name))
        return rows[0]

    def names(self) -> list[str]:
        with self._read() as connection:
            return [row["name"] for row in queries.deployments(connection)]

    def summaries(
        self, now: datetime | None = None, *, name: str | None = None, recent: int = 5
    ) -> list[dict[str, Any]]:
        """Deployments for `deployments ls --json` and the dashboard: the stored fields plus
        `next_runs` (ISO UTC, none while paused), `last_run`, `recent_runs`, `active_runs`,
        `pending_requests` and `triggers`."""
        now = datetime.now(UTC) if now is None else now
        with self._read() as connection:
            rows = queries.deployments(connection, name)
            for row in rows:
                runs = queries.claims(connection, row["name"], recent)
                row["recent_runs"] = runs
                row["last_run"] = runs[0] if runs else None
                row["active_runs"] = claim_sql.active_claims(connection, row["name"])
                row["pending_requests"] = queries.pending_requests(connection, [row["name"]])
                row["triggers"] = queries.triggers(connection, row["name"])
        for row in rows:
            row["next_runs"] = [] if row["paused"] else _next_runs(row, now)
        return rows

    def claims(self, deployment: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs services claimed, newest first (see `queries.claims`)."""
        with self._read() as connection:
            return queries.claims(connection, deployment, limit)

    def requests(self, deployment: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Manual run requests, newest first, with their run's state."""
        with self._read() as connection:
            return queries.requests(connection, deployment, limit)

    def live_services(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """`dagrun serve` processes whose heartbeat is current."""
        with self._read() as connection:
            return queries.live_services(connection, _epoch(now or datetime.now(UTC)))

    # --- what a service does (see dagrun.deployments.service) ---

    def start_service(
        self, service_id: str, *, host: str, pid: int, source: str | None, now: datetime, lease_seconds: float
    ) -> None:
        with self._write() as connection:
            claim_sql.start_service(
                connection,
                service_id,
                host=host,
                pid=pid,
                source=source,
                now=_epoch(now),
                lease_seconds=lease_seconds,
            )

    def heartbeat(self, service_id: str, now: datetime) -> None:
        with self._write() as connection:
            claim_sql.heartbeat(connection, service_id, _epoch(now))

    def stop_service(self, service_id: str, now: datetime) -> None:
        with self._write() as connection:
            claim_sql.stop_service(connection, service_id, _epoch(now))

    def scheduling_states(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._read() as connection:
            return queries.scheduling_states(connection, names)

    def pending_requests(self, names: Sequence[str]) -> list[dict[str, Any]]:
        with self._read() as connection:
            return queries.pending_requests(connection, names)

    def upstream_runs(self, deployment: str, trigger: Trigger, limit: int = 100) -> list[dict[str, Any]]:
        """Ended runs that fire `trigger` of `deployment` and started nothing yet."""
        with self._read() as connection:
            return ended_upstream_runs(connection, deployment, trigger, limit)

    def claim(self, claim: Claim, *, service_id: str, now: datetime, max_active_runs: int) -> ClaimResult:
        with self._write() as connection:
            return claim_sql.claim_run(
                connection, claim, service_id=service_id, now=_epoch(now), max_active_runs=max_active_runs
            )

    def skip_slot(self, deployment: str, slot: datetime) -> None:
        with self._write() as connection:
            claim_sql.skip_slot(connection, deployment, slot.isoformat())

    def refuse_request(self, request_id: int, error: str, now: datetime) -> None:
        with self._write() as connection:
            claim_sql.refuse_request(connection, request_id, error=error, now=_epoch(now))

    def mark_started(self, claim_id: str, *, pid: int, host: str, now: datetime) -> None:
        with self._write() as connection:
            claim_sql.mark_started(connection, claim_id, pid=pid, host=host, now=_epoch(now))

    def finish(
        self,
        claim_id: str,
        *,
        state: StateType,
        now: datetime,
        exit_code: int | None = None,
        message: str | None = None,
    ) -> None:
        with self._write() as connection:
            claim_sql.finish_run(
                connection, claim_id, state=state, now=_epoch(now), exit_code=exit_code, message=message
            )

    def orphaned_claims(self, service_id: str, now: datetime) -> list[dict[str, Any]]:
        """Open claims of services that are gone (stopped, or heartbeat lease expired)."""
        with self._read() as connection:
            return queries.open_claims_of_dead_services(connection, service_id, _epoch(now))

    def retake(self, claim_id: str, *, old_service: str, new_service: str) -> bool:
        with self._write() as connection:
            return claim_sql.retake_run(
                connection, claim_id, old_service=old_service, new_service=new_service
            )

    def recorded_run(self, claim: Mapping[str, Any]) -> dict[str, Any] | None:
        """The history's record of a claimed run, after noticing runs whose lease expired."""
        self.history.mark_lost_runs()
        with self._read() as connection:
            return queries.recorded_run(connection, dict(claim))

    # --- transactions (on the history store's connections) ---

    def _write(self) -> Any:
        return self.history.write_transaction()

    def _read(self) -> Any:
        return self.history.read_transaction()


def _unknown(connection: Any, name: str) -> str:
    known = ", ".join(row["name"] for row in queries.deployments(connection)) or "none"
    return f"No deployment {name!r} (registered: {known}); `dagrun serve FILE` registers them"


def _deployment_row(deployment: Deployment) -> dict[str, Any]:
    if deployment.flow_file is None:
        raise ConfigError(
            f"deployment {deployment.name!r}: flow: flow {deployment.flow.name!r} has no source file "
            "to run it from; define it in a .py file"
        )
    return {
        "name": deployment.name,
        "flow_name": deployment.flow.name,
        "flow_file": deployment.flow_file,
        "parameters": json.dumps(dict(deployment.parameters)),
        "parameter_schema": json.dumps(parameter_schema(deployment.flow)),
        "schedules": json.dumps([schedule_to_spec(schedule) for schedule in deployment.schedules]),
        "schedule": deployment.describe_schedule(),
        "paused": int(deployment.paused),
        "max_active_runs": deployment.max_active_runs,
        "catchup": int(deployment.catchup),
    }


def _trigger_rows(deployment: Deployment) -> list[dict[str, Any]]:
    return [
        {
            "trigger_key": trigger.key,
            "after_deployment": trigger.after_deployment,
            "after_flow": trigger.after_flow,
            "states": json.dumps(list(trigger.states)),
            "parameter": trigger.parameter,
        }
        for trigger in deployment.triggers
    ]


def _next_runs(row: Mapping[str, Any], now: datetime) -> list[str]:
    slots: set[datetime] = set()
    for spec in row["schedules"]:
        slots.update(schedule_from_spec(spec, owner=row["name"]).next_slots(now, NEXT_RUNS))
    return [slot.isoformat() for slot in sorted(slots)[:NEXT_RUNS]]


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ConfigError(f"{moment.isoformat()} has no timezone; pass an aware datetime")
    return moment.timestamp()
