"""Runs recorded into an SQLite file that was deleted mid-run, copied into its replacement.

A process that has the database open keeps writing into the deleted file, unseen by anyone,
so a `rm ~/.dagrun/dagrun.db` during a run would silently lose that run. `HistoryStore.apply`
notices the file is gone (or is another file) before each batch; this module then reads this
process's unfinished runs out of the deleted file, through the connection still open on it,
and writes them into the new database, so later events of those runs land next to them.

Only this process's unfinished runs (host and pid as `RunRecorder` records them) are copied:
finished runs and other processes' runs were deleted on purpose, or belong to their own
processes. Log lines and states get new ids in the new file, in their old order. A process
that only reads (the dashboard) moves on to the new file once there is one, copying nothing.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from dagrun.history.events import ACTIVE_STATE_NAMES

# (table, which rows belong to the runs, serial id column renumbered in the new file)
_TABLES = (
    ("flow_runs", "id IN ({runs})", None),
    ("task_runs", "flow_run_id IN ({runs})", None),
    ("task_run_upstream", "flow_run_id IN ({runs})", None),
    ("task_run_attempts", "task_run_id IN (SELECT id FROM task_runs WHERE flow_run_id IN ({runs}))", None),
    ("states", "flow_run_id IN ({runs})", "id"),
    ("logs", "flow_run_id IN ({runs})", "id"),
)


@dataclass(frozen=True, slots=True)
class SavedRows:
    """Rows of one table, as read from the deleted file."""

    table: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def read_unfinished_runs(connection: Any) -> list[SavedRows]:
    """Every row of this process's unfinished flow runs (subflows included)."""
    states = ", ".join("?" * len(ACTIVE_STATE_NAMES))
    run_ids = [
        row["id"]
        for row in connection.execute(
            f"SELECT id FROM flow_runs WHERE host = ? AND pid = ? AND state IN ({states})",
            (socket.gethostname(), os.getpid(), *ACTIVE_STATE_NAMES),
        )
    ]
    if not run_ids:
        return []
    marks = ", ".join("?" * len(run_ids))
    saved = []
    for table, where, serial in _TABLES:
        order = f" ORDER BY {serial}" if serial else ""
        rows = connection.execute(
            f"SELECT * FROM {table} WHERE {where.format(runs=marks)}{order}", run_ids
        ).fetchall()
        if rows:
            columns = tuple(column for column in rows[0] if column != serial)
            values = tuple(tuple(row[column] for column in columns) for row in rows)
            saved.append(SavedRows(table, columns, values))
    return saved


def write_rows(connection: Any, saved: list[SavedRows]) -> None:
    """Insert the saved rows; rows the new database already has are kept as they are."""
    for rows in saved:
        connection.executemany(
            f"INSERT INTO {rows.table} ({', '.join(rows.columns)}) "
            f"VALUES ({', '.join('?' * len(rows.columns))}) ON CONFLICT DO NOTHING",
            rows.rows,
        )


def run_count(saved: list[SavedRows]) -> int:
    """How many flow runs the saved rows hold."""
    return sum(len(rows.rows) for rows in saved if rows.table == "flow_runs")
