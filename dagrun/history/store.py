"""`HistoryStore`: the run history of flow runs and task runs, in SQLite by default.

The store is written by one `HistoryWriter` per driver process (through `apply`, one write
transaction per batch of events) and read by the CLI, the dashboard and the engine (to learn
of cancel requests). Many processes may share one database: SQLite's WAL lets readers
proceed while one writer writes, and every write transaction starts with `BEGIN IMMEDIATE`
under a 30 s busy timeout, so concurrent writers queue instead of failing. PostgreSQL
(`DAGRUN_DATABASE_URL=postgresql://...`) runs the same code; its dialect queues writers the
same way (see `dagrun.history.postgres`).

Each thread gets its own connection (a connection is not safe to share between threads
mid-transaction); `close()` closes all of them. No run stays unfinished forever: a run whose
driver stopped renewing its heartbeat lease, or whose driver process is seen gone from its own
machine, is marked `Crashed` when history is read, and when another run starts.

    store = HistoryStore.from_env()            # $DAGRUN_DATABASE_URL or $DAGRUN_HOME/dagrun.db
    store.list_flow_runs(flow_name="etl", state="failed", limit=10)
    store.get_flow_run(store.resolve_id("3f9a"))
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from dagrun.config import dagrun_home
from dagrun.errors import ConfigError
from dagrun.history import queries
from dagrun.history.dialect import Database, parse_database_url
from dagrun.history.events import (
    ACTIVE_STATE_NAMES,
    Event,
    FlowRunStarted,
    FlowRunState,
    Heartbeat,
    LogLine,
    TaskRunAttempt,
    TaskRunCreated,
    TaskRunDetails,
    TaskRunState,
    state_name,
)
from dagrun.history.recording import (
    crash_lost_runs,
    record_flow_run_states,
    record_flow_runs_started,
    record_heartbeats,
    record_log_lines,
    record_task_run_attempts,
    record_task_run_details,
    record_task_run_states,
    record_task_runs_created,
)
from dagrun.history.schema import migrate, rollback
from dagrun.states import StateType

logger = logging.getLogger("dagrun.history")

_RECORDERS: Mapping[type, Callable[[Any, Any], None]] = MappingProxyType(
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


class HistoryStore:
    """The run history in SQLite (WAL, synchronous=NORMAL, a 30 s busy timeout, BEGIN IMMEDIATE
    writes) or PostgreSQL (writes queued by an advisory lock).

    | method                                   | does                                        |
    |------------------------------------------|---------------------------------------------|
    | `apply(events)`                          | records a batch of events, one transaction  |
    | `list_flow_runs(flow_name=, state=, limit=)` | flow runs, newest first                 |
    | `get_flow_run(id)` / `get_task_run(id)`  | one run in detail, or None                  |
    | `get_logs(flow_run_id, task_name=, after_id=, limit=)` | log lines in order            |
    | `flow_stats()`                           | per flow: runs, success rate, durations     |
    | `request_cancel(id)` / `cancel_requested(id)` | ask a running run's driver to cancel   |
    | `mark_lost_runs()`                       | runs whose driver died -> Crashed           |
    | `resolve_id(prefix)`                     | a full run id from a short prefix           |
    """

    def __init__(self, url_or_path: str | os.PathLike[str]) -> None:
        """Open (creating or upgrading) the database a path, `sqlite:///path` or
        `postgresql://` URL names."""
        self._database: Database = parse_database_url(url_or_path)
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _connections, appended to from any thread
        self._connections: list[Any] = []
        self._closed = False
        try:
            migrate(
                self._connection(),
                begin_write=self._database.begin_write,
                ddl=self._database.ddl,
                describe=self._database.describe(),
            )
        except ConfigError:
            self.close()
            raise
        except self._database.Error as exc:
            self.close()
            raise ConfigError(
                f"Cannot open the run history, {self._database.describe()}: {exc} "
                "(DAGRUN_DATABASE_URL, or DAGRUN_HOME, chooses where it lives)"
            ) from exc

    @classmethod
    def from_env(cls) -> HistoryStore:
        """The store `DAGRUN_DATABASE_URL` names, else `$DAGRUN_HOME/dagrun.db`."""
        return cls(database_url_from_env())

    @property
    def url(self) -> str:
        """What opens this database again, also in another process (it may hold a password:
        pass it on, never print it; `describe()` is for messages)."""
        return self._database.url

    @property
    def database(self) -> Database:
        """The database and its dialect."""
        return self._database

    @property
    def path(self) -> Path | None:
        """The SQLite database file; None for a server database."""
        return self._database.path

    def describe(self) -> str:
        """The database for messages, password masked: "SQLite database ~/.dagrun/dagrun.db"."""
        return self._database.describe()

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HistoryStore({self._database.describe()!r})"

    # --- writes: each method is one write transaction ---

    def apply(self, events: Sequence[Event]) -> None:
        """Record `events`, in order, in one write transaction (all or nothing)."""
        if not events:
            return
        for event in events:
            if type(event) not in _RECORDERS:
                raise TypeError(f"not a history event: {event!r}")
        with self.write_transaction() as connection:
            for kind, group in groupby(events, key=type):
                _RECORDERS[kind](connection, list(group))
            # A new run starting is when a dead driver's runs are noticed even if nobody
            # reads the history; after the batch, so its own heartbeats count.
            if any(type(event) is FlowRunStarted for event in events):
                crash_lost_runs(connection, time.time())

    def request_cancel(self, flow_run_id: str) -> bool:
        """Ask the run's driver to cancel it; False if the run is unknown or already over."""
        now = time.time()
        with self.write_transaction() as connection:
            # A run whose driver is gone cannot be cancelled by it: report it Crashed instead.
            crash_lost_runs(connection, now)
            cursor = connection.execute(
                "UPDATE flow_runs SET cancel_requested = COALESCE(cancel_requested, ?) "
                f"WHERE id = ? AND state IN ({', '.join('?' * len(ACTIVE_STATE_NAMES))})",
                (now, flow_run_id, *ACTIVE_STATE_NAMES),
            )
            return bool(cursor.rowcount > 0)

    def cancel_requested(self, flow_run_id: str) -> bool:
        """Whether `request_cancel` was called for the run (the driver polls this)."""
        row = (
            self._connection()
            .execute("SELECT cancel_requested FROM flow_runs WHERE id = ?", (flow_run_id,))
            .fetchone()
        )
        if row is None:
            return False
        return row["cancel_requested"] is not None

    def mark_lost_runs(self, now: float | None = None) -> int:
        """Mark `Crashed` the unfinished runs whose lease expired; return how many."""
        with self.write_transaction() as connection:
            return crash_lost_runs(connection, time.time() if now is None else now)

    # --- reads ---

    def list_flow_runs(
        self,
        *,
        flow_name: str | None = None,
        state: str | StateType | None = None,
        limit: int | None = 50,
    ) -> list[dict[str, Any]]:
        """Flow runs, newest first: id, flow_name, flow_run_name, state, message, start_time,
        end_time, duration, parameters, deployment, parent_flow_run_id."""
        state_filter = None if state is None else _known_state(state)
        self._mark_lost_runs_if_any()
        with self.read_transaction() as connection:
            return queries.flow_runs(
                connection, flow_name=flow_name, state=state_filter, limit=limit
            )

    def get_flow_run(self, flow_run_id: str) -> dict[str, Any] | None:
        """One flow run as in `list_flow_runs`, plus `task_runs`, `subflow_runs`,
        `state_history`, error, traceback, executor, address, host, pid, heartbeat,
        lease_seconds, cancel_requested, slot, parent_task_run_id; None if unknown."""
        self._mark_lost_runs_if_any()
        with self.read_transaction() as connection:
            return queries.flow_run(connection, flow_run_id)

    def get_task_run(self, task_run_id: str) -> dict[str, Any] | None:
        """One task run as in `get_flow_run()["task_runs"]`, plus `attempt_history` and
        `state_history`; None if unknown."""
        self._mark_lost_runs_if_any()
        with self.read_transaction() as connection:
            return queries.task_run(connection, task_run_id)

    def get_logs(
        self,
        flow_run_id: str,
        *,
        task_name: str | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The run's log lines with id > `after_id`, in order: id, timestamp, level,
        level_name, logger, task_run_id, task_name, task_run_name, message.

        Follow a running run by passing the last id seen as `after_id`.
        """
        # No lease check here: `runs logs --follow` polls this several times a second.
        with self.read_transaction() as connection:
            return queries.logs(
                connection, flow_run_id, task_name=task_name, after_id=after_id, limit=limit
            )

    def flow_stats(self) -> list[dict[str, Any]]:
        """Per flow, by name: flow_name, run_count, success_rate, last_duration,
        median_duration, last_state, last_start_time."""
        self._mark_lost_runs_if_any()
        with self.read_transaction() as connection:
            return queries.flow_stats(connection)

    def resolve_id(
        self, prefix: str, *, kind: Literal["flow_run", "task_run"] = "flow_run"
    ) -> str | None:
        """The id of the one flow run (or task run) whose id starts with `prefix`.

        None when no run matches; an exact id always wins; several matches are a
        `ConfigError` listing them.
        """
        prefix = prefix.strip()
        if not prefix:
            return None
        table = "flow_runs" if kind == "flow_run" else "task_runs"
        with self.read_transaction() as connection:
            ids = queries.ids_with_prefix(connection, table, prefix, limit=6)
        if not ids:
            return None
        if ids[0] == prefix or len(ids) == 1:
            return ids[0]
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise ConfigError(
            f"The {kind.replace('_', ' ')} id prefix {prefix!r} is ambiguous: it matches "
            f"{shown}; type more characters"
        )

    # --- connections and transactions ---

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"{self!r} is closed")
                connection = self._database.connect()
                self._connections.append(connection)
            self._local.connection = connection
        elif self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return connection

    @contextmanager
    def write_transaction(self) -> Iterator[Any]:
        """A write transaction (SQLite: `BEGIN IMMEDIATE`) on this thread's connection, for
        stores that share the database, like the deployment store and concurrency limits."""
        connection = self._connection()
        connection.execute(self._database.begin_write)
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise

    @contextmanager
    def read_transaction(self) -> Iterator[Any]:
        # One snapshot for a multi-query answer: a run's task runs and its edges agree.
        connection = self._connection()
        connection.execute(self._database.begin_read)
        try:
            yield connection
        finally:
            rollback(connection)

    def _mark_lost_runs_if_any(self) -> None:
        now = time.time()
        try:
            with self.read_transaction() as connection:
                lost = queries.lost_flow_runs(connection, now)
            if lost:
                self.mark_lost_runs(now)
        except self._database.Error as exc:
            # A read-only copy (the dashboard's, a backup) cannot be corrected: show it as is.
            logger.debug("Could not mark lost runs Crashed in %s: %s", self.describe(), exc)


def database_url_from_env() -> str:
    """`DAGRUN_DATABASE_URL`, else `$DAGRUN_HOME/dagrun.db`, with the SQLite file's directory
    created (a `ConfigError` if it cannot be)."""
    url = os.environ.get("DAGRUN_DATABASE_URL", "").strip() or str(dagrun_home() / "dagrun.db")
    database = parse_database_url(url)
    try:
        database.prepare()
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the directory of the run history, {database.describe()}: {exc} "
            "(DAGRUN_DATABASE_URL, or DAGRUN_HOME, chooses where it lives)"
        ) from exc
    return url


def _known_state(state: str | StateType) -> str:
    name = state_name(state)
    if name is None:
        known = ", ".join(member.value for member in StateType)
        raise ConfigError(f"Unknown state {state!r}; expected one of {known}")
    return name
