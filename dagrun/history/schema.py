"""The run-history schema as an ordered list of migrations, and the code that applies them.

`schema_version` holds one row per applied migration; the database's version is the highest.
Opening a database applies every newer migration in one write transaction, so an old
database opens with a newer dagrun and a crash mid-upgrade leaves it at its old version.
Several processes opening a new database at once is safe: the version is read inside the
write transaction, so only the first applies the migrations. Migrations are append-only:
a released migration is never edited, a change is a new migration.

Tables (times are epoch seconds, states are `StateType` names):

    flow_runs          one row per flow run; `heartbeat` + `lease_seconds` say when its
                       driver was last known alive, `host`, `pid`, `process_space` and
                       `process_start` which process it is; `cancel_requested` is set by the CLI
    task_runs          one row per task run, `attempts` is the number of attempts so far
    task_run_upstream  dependency edges: task run -> upstream task run, in argument order
    states             every state a flow run (task_run_id NULL) or task run entered
    task_run_attempts  one row per attempt of a task run, with its error and traceback
                       (`traceback` is the user's view, `full_traceback` every frame: migration 5)
    logs               log lines of flow runs and their task runs, in arrival order

Deployments (migration 3, see `dagrun.deployments`):

    deployments          one row per registered deployment, its schedule and pause flag
    deployment_triggers  "run B when a run of A ends in state S"
    deployment_requests  manual run requests, inserted by the CLI or the dashboard
    deployment_runs      each run a service claimed: unique per slot, request, trigger event
    deployment_services  the `dagrun serve` processes and their heartbeats
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagrun.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema; `{serial_primary_key}` is filled in by the dialect."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "flow runs, task runs, upstream edges, states, attempts and logs",
        (
            """CREATE TABLE flow_runs (
                id TEXT PRIMARY KEY,
                flow_name TEXT NOT NULL,
                flow_run_name TEXT,
                state TEXT NOT NULL,
                state_time DOUBLE PRECISION,
                message TEXT,
                parameters TEXT NOT NULL DEFAULT '{{}}',
                start_time DOUBLE PRECISION NOT NULL,
                end_time DOUBLE PRECISION,
                parent_flow_run_id TEXT,
                parent_task_run_id TEXT,
                executor TEXT,
                address TEXT,
                host TEXT,
                pid INTEGER,
                heartbeat DOUBLE PRECISION NOT NULL,
                lease_seconds DOUBLE PRECISION NOT NULL,
                error TEXT,
                traceback TEXT
            )""",
            "CREATE INDEX flow_runs_by_start_time ON flow_runs (start_time)",
            "CREATE INDEX flow_runs_by_flow_name ON flow_runs (flow_name, start_time)",
            # Finding runs whose lease expired reads only the few runs in a non-final state.
            "CREATE INDEX flow_runs_by_state ON flow_runs (state)",
            "CREATE INDEX flow_runs_by_parent ON flow_runs (parent_flow_run_id)",
            """CREATE TABLE task_runs (
                id TEXT PRIMARY KEY,
                flow_run_id TEXT NOT NULL,
                task_name TEXT NOT NULL,
                task_run_name TEXT,
                state TEXT NOT NULL,
                state_time DOUBLE PRECISION,
                message TEXT,
                created DOUBLE PRECISION NOT NULL,
                start_time DOUBLE PRECISION,
                end_time DOUBLE PRECISION,
                attempts INTEGER NOT NULL DEFAULT 0,
                cache_key TEXT,
                cache_hit INTEGER,
                worker TEXT,
                result_size BIGINT,
                error TEXT,
                traceback TEXT
            )""",
            "CREATE INDEX task_runs_by_flow_run ON task_runs (flow_run_id, created)",
            """CREATE TABLE task_run_upstream (
                flow_run_id TEXT NOT NULL,
                task_run_id TEXT NOT NULL,
                upstream_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                PRIMARY KEY (task_run_id, upstream_id)
            )""",
            "CREATE INDEX task_run_upstream_by_flow_run ON task_run_upstream (flow_run_id)",
            """CREATE TABLE states (
                id {serial_primary_key},
                flow_run_id TEXT NOT NULL,
                task_run_id TEXT,
                state TEXT NOT NULL,
                timestamp DOUBLE PRECISION NOT NULL,
                message TEXT
            )""",
            # One index serves both a flow run's own history (task_run_id IS NULL) and a task
            # run's (the task run's row gives its flow_run_id); a second index would slow the
            # busiest insert in the schema.
            "CREATE INDEX states_by_run ON states (flow_run_id, task_run_id, id)",
            """CREATE TABLE task_run_attempts (
                task_run_id TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                start_time DOUBLE PRECISION,
                end_time DOUBLE PRECISION,
                error TEXT,
                traceback TEXT,
                PRIMARY KEY (task_run_id, attempt)
            )""",
            """CREATE TABLE logs (
                id {serial_primary_key},
                flow_run_id TEXT NOT NULL,
                task_run_id TEXT,
                timestamp DOUBLE PRECISION NOT NULL,
                level INTEGER NOT NULL,
                logger TEXT,
                message TEXT NOT NULL
            )""",
            "CREATE INDEX logs_by_flow_run ON logs (flow_run_id, id)",
        ),
    ),
    Migration(
        2,
        "cancellation requests; the deployment and schedule slot that started a run",
        (
            "ALTER TABLE flow_runs ADD COLUMN cancel_requested DOUBLE PRECISION",
            # Deployments themselves get their own table with issue 6; a run only names its own.
            "ALTER TABLE flow_runs ADD COLUMN deployment TEXT",
            "ALTER TABLE flow_runs ADD COLUMN slot TEXT",
        ),
    ),
    Migration(
        3,
        "deployments, their triggers, manual run requests, run claims and serve services",
        (
            # One row per deployment `dagrun serve` registered. `last_slot` (ISO UTC) is the
            # latest schedule slot handled; NULL means none yet, counted from `registered_at`.
            """CREATE TABLE deployments (
                name TEXT PRIMARY KEY,
                flow_name TEXT NOT NULL,
                flow_file TEXT NOT NULL,
                parameters TEXT NOT NULL DEFAULT '{{}}',
                parameter_schema TEXT NOT NULL DEFAULT '[]',
                schedules TEXT NOT NULL DEFAULT '[]',
                schedule TEXT NOT NULL DEFAULT '',
                paused INTEGER NOT NULL DEFAULT 0,
                max_active_runs INTEGER NOT NULL DEFAULT 1,
                catchup INTEGER NOT NULL DEFAULT 0,
                registered_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                last_slot TEXT
            )""",
            # Run `deployment` when a run of `after_deployment` (or of flow `after_flow`) ends
            # in one of `states` (JSON list) at or after `since` (history time).
            """CREATE TABLE deployment_triggers (
                deployment TEXT NOT NULL,
                trigger_key TEXT NOT NULL,
                after_deployment TEXT,
                after_flow TEXT,
                states TEXT NOT NULL,
                parameter TEXT,
                since DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (deployment, trigger_key)
            )""",
            # A manual run asked for by any process; a service claims it by setting
            # `flow_run_id`, or refuses it by setting `error`.
            """CREATE TABLE deployment_requests (
                id {serial_primary_key},
                deployment TEXT NOT NULL,
                parameters TEXT NOT NULL DEFAULT '{{}}',
                requested_at DOUBLE PRECISION NOT NULL,
                requested_by TEXT,
                flow_run_id TEXT,
                claimed_at DOUBLE PRECISION,
                error TEXT
            )""",
            "CREATE INDEX deployment_requests_by_deployment ON deployment_requests (deployment, id)",
            # One row per run a service claimed: the unique keys make each schedule slot,
            # manual request and (trigger, upstream run) start at most one run, whichever
            # service or restart claims it first. `id` is also the run's id in flow_runs.
            """CREATE TABLE deployment_runs (
                id TEXT PRIMARY KEY,
                deployment TEXT NOT NULL,
                reason TEXT NOT NULL,
                slot TEXT,
                request_id INTEGER,
                trigger_key TEXT,
                upstream_run_id TEXT,
                parameters TEXT NOT NULL DEFAULT '{{}}',
                service_id TEXT NOT NULL,
                claimed_at DOUBLE PRECISION NOT NULL,
                started_at DOUBLE PRECISION,
                host TEXT,
                pid INTEGER,
                state TEXT NOT NULL,
                ended_at DOUBLE PRECISION,
                exit_code INTEGER,
                message TEXT,
                UNIQUE (deployment, slot),
                UNIQUE (request_id),
                UNIQUE (deployment, trigger_key, upstream_run_id)
            )""",
            "CREATE INDEX deployment_runs_by_deployment ON deployment_runs (deployment, claimed_at)",
            "CREATE INDEX deployment_runs_open ON deployment_runs (ended_at, service_id)",
            # Each `dagrun serve` process, so others can tell a live one's claims from a
            # dead one's: alive while `heartbeat + lease_seconds` is ahead and not stopped.
            """CREATE TABLE deployment_services (
                id TEXT PRIMARY KEY,
                host TEXT,
                pid INTEGER,
                source TEXT,
                started_at DOUBLE PRECISION NOT NULL,
                heartbeat DOUBLE PRECISION NOT NULL,
                lease_seconds DOUBLE PRECISION NOT NULL,
                stopped_at DOUBLE PRECISION
            )""",
            # Triggers look for ended runs of a deployment.
            "CREATE INDEX flow_runs_by_deployment ON flow_runs (deployment, start_time)",
        ),
    ),
    Migration(
        4,
        "tag concurrency limits",
        (
            # `dagrun concurrency set TAG N`: at most `max_running` task runs tagged `tag`
            # execute at once across every flow sharing a scheduler (see `dagrun.concurrency`).
            """CREATE TABLE concurrency_limits (
                tag TEXT PRIMARY KEY,
                max_running INTEGER NOT NULL,
                updated DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "the driver's process space and start time, to see a dead driver without its lease",
        (
            # Boot id and PID namespace, in which `pid` started at `process_start` is the
            # driver (see `dagrun.history.drivers`).
            "ALTER TABLE flow_runs ADD COLUMN process_space TEXT",
            "ALTER TABLE flow_runs ADD COLUMN process_start DOUBLE PRECISION",
        ),
    ),
    Migration(
        6,
        "full tracebacks beside the user's view",
        (
            # `traceback` holds the user's view (their frames first, see `dagrun.tracebacks`);
            # `full_traceback` every frame, dagrun's and Dask's included.
            "ALTER TABLE flow_runs ADD COLUMN full_traceback TEXT",
            "ALTER TABLE task_runs ADD COLUMN full_traceback TEXT",
            "ALTER TABLE task_run_attempts ADD COLUMN full_traceback TEXT",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(connection: Any) -> int:
    """The database's schema version; 0 for a new, empty database."""
    try:
        row = connection.execute("SELECT MAX(version) AS version FROM schema_version").fetchone()
    except Exception as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return 0
        raise
    return int(row["version"] or 0)


def migrate(
    connection: Any,
    *,
    begin_write: str,
    ddl: Callable[[str], str],
    describe: str,
    target: int = LATEST_VERSION,
) -> int:
    """Bring the database up to `target` in one write transaction; return the new version.

    A database newer than this code is a `ConfigError`: dagrun would misread it.
    """
    version = current_version(connection)
    if version > LATEST_VERSION:
        raise ConfigError(
            f"The run-history {describe} has schema version {version}, newer than this "
            f"dagrun understands ({LATEST_VERSION}); upgrade dagrun or set DAGRUN_DATABASE_URL "
            "to another database"
        )
    if version >= target:
        return version
    connection.execute(begin_write)
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
            "applied DOUBLE PRECISION NOT NULL)"
        )
        # Read again under the write lock: another process may have migrated meanwhile.
        version = current_version(connection)
        for migration in MIGRATIONS:
            if version < migration.version <= target:
                for statement in migration.statements:
                    connection.execute(ddl(statement))
                connection.execute(
                    "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)",
                    (migration.version, migration.description, time.time()),
                )
                version = migration.version
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise
    return version


def rollback(connection: Any) -> None:
    """Roll back the open transaction, if the failure left one open."""
    # Some errors (disk full, I/O) end the transaction themselves; the original error is
    # the one worth raising, not "no transaction is active".
    with contextlib.suppress(Exception):
        connection.execute("ROLLBACK")
