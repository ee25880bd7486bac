"""The run history: every flow run and task run, their states, attempts and logs.

| module        | for                                                                   |
|---------------|-----------------------------------------------------------------------|
| `events`      | the frozen records the engine reports (FlowRunStarted, TaskRunState...) |
| `writer`      | `HistoryWriter`: batches events off the hot path, keeps heartbeats    |
| `store`       | `HistoryStore`: opens the database, applies events, answers queries   |
| `recording`   | the SQL that writes each kind of event                                |
| `queries`     | the SQL that reads runs, logs and per-flow statistics                 |
| `schema`      | the versioned migrations                                              |
| `dialect`     | how a URL names the database; everything specific to SQLite           |
| `postgres`    | everything specific to PostgreSQL (psycopg, placeholders, locking)    |
| `parameters`  | parameters as JSON, secrets masked                                    |
| `drivers`     | whether a run's driver process is gone, seen from its own machine     |
| `rescue`      | this process's unfinished runs, copied out of a deleted SQLite file   |

This package sits below the engine: it imports nothing from the engine, the executors or
the CLI, and it is the only place that imports `sqlite3` (and, when a PostgreSQL URL is used,
`psycopg`).
"""

from dagrun.history.events import (
    Event,
    FlowRunStarted,
    FlowRunState,
    Heartbeat,
    LogLine,
    TaskRunAttempt,
    TaskRunCreated,
    TaskRunDetails,
    TaskRunState,
)
from dagrun.history.store import HistoryStore
from dagrun.history.writer import HistoryWriter

__all__ = [
    "Event",
    "FlowRunStarted",
    "FlowRunState",
    "Heartbeat",
    "HistoryStore",
    "HistoryWriter",
    "LogLine",
    "TaskRunAttempt",
    "TaskRunCreated",
    "TaskRunDetails",
    "TaskRunState",
]
