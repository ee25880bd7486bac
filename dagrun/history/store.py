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
machine, is marked `Crashed` when history is read, and when another run starts. A damaged
database is a `HistoryDamagedError` (exit 2) saying what to do; an SQLite file deleted under a
recording process is followed to its replacement, this process's unfinished runs copied over
(`dagrun.history.rescue`).

    store = HistoryStore.from_env()            # $DAGRUN_DATABASE_URL or $DAGRUN_HOME/dagrun.db
    store.list_flow_runs(flow_name="etl", state="failed", limit=10)
    store.get_flow_run(store.resolve_id("3f9a"))
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

from dagrun.errors import ConfigError, HistoryDamagedError
from dagrun.history import queries, rescue
from dagrun.history.dialect import Database, database_url_from_env, parse_database_url
from dagrun.history.events import ACTIVE_STATE_NAMES, Event, FlowRunStarted, state_name
from dagrun.history.recording import RECORDERS, crash_lost_runs
from dagrun.history.schema import migrate, rollback
from dagrun.states import StateType

logger = logging.getLogger("dagrun.history")


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
        self._generation = 0  # bumped when the file was deleted: connections then reopen
        self._follow_lock = threading.Lock()
        self._closed = False
        try:
            self._migrate()
        except ConfigError:
            self.close()
            raise
        except self._database.Error as exc:
            self.close()
            self._raise_if_damaged(exc)
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
        """Record `events`, in order, in one write transaction (all or nothing).

        If the SQLite file was deleted since it was opened, this process's unfinished runs
        are first copied into a new one (see `dagrun.history.rescue`)."""
        if not events:
            return
        for event in events:
            if type(event) not in RECORDERS:
                raise TypeError(f"not a history event: {event!r}")
        if self._database.file_identity() != self._identity:
            self._follow_deleted_file()
        with self.write_transaction() as connection:
            for kind, group in groupby(events, key=type):
                RECORDERS[kind](connection, list(group))
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
        with self._damage_reported():
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

    def flow_run_state(self, flow_run_id: str) -> str | None:
        """The run's state name, None if unknown: one row, for a reader following the run's
        logs. A run's last lines are written before its final state, so lines read after a
        final state was seen are all the lines there will be."""
        self._mark_lost_runs_if_any()
        with self.read_transaction() as connection:
            row = connection.execute(
                "SELECT state FROM flow_runs WHERE id = ?", (flow_run_id,)
            ).fetchone()
        return None if row is None else str(row["state"])

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
        if connection is not None and self._local.generation != self._generation:
            connection = None  # closed: it was open on a file since deleted
        if connection is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"{self!r} is closed")
                connection = self._database.connect()
                self._connections.append(connection)
                self._local.generation = self._generation
            self._local.connection = connection
        elif self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return connection

    def _migrate(self) -> None:
        """Create or upgrade the schema, and remember which file that was."""
        migrate(
            self._connection(),
            begin_write=self._database.begin_write,
            ddl=self._database.ddl,
            describe=self._database.describe(),
        )
        self._identity = self._database.file_identity()

    def _follow_deleted_file(self) -> None:
        """The SQLite file was deleted (or replaced) under this store's open connections:
        copy this process's unfinished runs out of it into a new one, and use that."""
        with self._follow_lock:
            if self._database.file_identity() == self._identity:
                return  # another thread of this process has followed it
            try:
                saved = rescue.read_unfinished_runs(self._connection())
            except self._database.Error as exc:
                logger.debug("Could not read runs of the deleted %s: %s", self.describe(), exc)
                saved = []
            with self._lock:
                connections, self._connections = self._connections, []
                self._generation += 1
            # Closed before the new file is created: none of them is open on it, only on the old.
            for connection in connections:
                with contextlib.suppress(Exception):
                    connection.close()
            self._database.prepare()  # its directory may have gone too
            self._migrate()
            if not saved:
                logger.warning("The run history, %s, was deleted: using the new one", self.describe())
                return
            with self.write_transaction() as connection:
                rescue.write_rows(connection, saved)
            logger.warning(
                "The run history, %s, was deleted while this process was recording runs in it: "
                "recording into a new one there, with its %d unfinished run(s) copied over",
                self.describe(), rescue.run_count(saved),
            )

    @contextmanager
    def write_transaction(self) -> Iterator[Any]:
        """A write transaction (SQLite: `BEGIN IMMEDIATE`) on this thread's connection, for
        stores that share the database, like the deployment store and concurrency limits."""
        with self._damage_reported():
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
        if self._database.file_identity() not in (self._identity, None):
            self._follow_deleted_file()  # a reader (the dashboard) moves on once there is a new one
        with self._damage_reported():
            connection = self._connection()
            connection.execute(self._database.begin_read)
            try:
                yield connection
            finally:
                rollback(connection)

    @contextmanager
    def _damage_reported(self) -> Iterator[None]:
        """A damaged database is one `HistoryDamagedError` saying what to do, not a traceback."""
        try:
            yield
        except self._database.Error as exc:
            self._raise_if_damaged(exc)
            raise

    def _raise_if_damaged(self, exc: Exception) -> None:
        advice = self._database.damaged(exc)
        if advice is not None:
            raise HistoryDamagedError(
                f"The run history is damaged: {self._database.describe()}: {exc}; {advice}"
            ) from exc

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


def _known_state(state: str | StateType) -> str:
    name = state_name(state)
    if name is None:
        known = ", ".join(member.value for member in StateType)
        raise ConfigError(f"Unknown state {state!r}; expected one of {known}")
    return name
