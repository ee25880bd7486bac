"""Everything about the run history that is specific to SQLite, in one place.

The rest of `dagrun.history` speaks DB-API 2 with `?` placeholders and SQL that SQLite and
PostgreSQL both accept (`ON CONFLICT ... DO UPDATE`, `COALESCE`, `CASE`, `LIMIT`, `DOUBLE
PRECISION`). What differs lives here: how a URL names a database, how a connection is opened
and tuned, how a write transaction begins, and the DDL for an auto-incrementing key. Adding
PostgreSQL means a second class with the same attributes (with `%s` placeholders and `BEGIN`
for writes) chosen by `parse_database_url`.

SQLite is tuned for many writers on one machine: WAL (readers never block the writer),
`synchronous=NORMAL` (safe in WAL; a power cut may lose the last commits, never corrupt),
a 30 s busy timeout, and `BEGIN IMMEDIATE` so a write transaction takes the write lock when
it starts rather than failing with "database is locked" when it tries to upgrade a read lock.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

from dagrun.errors import ConfigError

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a connection waits for another process's write lock before giving up."""

_URL_HELP = (
    "DAGRUN_DATABASE_URL must be a file path or an SQLite URL such as "
    "sqlite:///relative/dagrun.db or sqlite:////absolute/dagrun.db (append ?mode=ro to open "
    "it read-only)"
)


@dataclass(frozen=True, slots=True)
class SQLiteDatabase:
    """An SQLite database file and how to open connections to it."""

    path: Path
    read_only: bool = False

    Error: ClassVar[type[Exception]] = sqlite3.Error
    """Base class of the errors this database's connections raise."""
    begin_write: ClassVar[str] = "BEGIN IMMEDIATE"
    begin_read: ClassVar[str] = "BEGIN"

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are begun explicitly)."""
        if self.read_only:
            connection = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,  # HistoryStore.close() closes every thread's connection
            )
        else:
            connection = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            if not self.read_only:
                _use_wal(connection)
            connection.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error:
            connection.close()
            raise
        connection.row_factory = _dict_row
        return connection

    def ddl(self, statement: str) -> str:
        """A migration statement with this dialect's spelling of its type placeholders."""
        return statement.format(serial_primary_key="INTEGER PRIMARY KEY")

    def describe(self) -> str:
        return f"SQLite database {self.path}" + (" (read-only)" if self.read_only else "")


def parse_database_url(url_or_path: str | os.PathLike[str]) -> SQLiteDatabase:
    """The database a path or `sqlite:///` URL names; anything else is a `ConfigError`."""
    if isinstance(url_or_path, os.PathLike):
        return SQLiteDatabase(Path(url_or_path))
    if not isinstance(url_or_path, str):
        raise ConfigError(f"Invalid run-history database {url_or_path!r}: {_URL_HELP}")
    text = url_or_path.strip()
    if text.startswith("sqlite:///"):
        # SQLAlchemy's convention: three slashes then a relative path, four for an absolute one.
        location, _, query = text[len("sqlite:///") :].partition("?")
        return SQLiteDatabase(_file_path(location, text), _read_only(query, text))
    if "://" in text or text.startswith("sqlite:"):
        scheme = text.split(":", 1)[0]
        raise ConfigError(
            f"Unsupported run-history database {text!r} (scheme {scheme!r}): {_URL_HELP}"
        )
    return SQLiteDatabase(_file_path(text, text))


def _file_path(location: str, original: str) -> Path:
    if location in ("", ":memory:"):
        # Each thread and process opens its own connection, so an in-memory database would
        # give every one of them a different, empty history.
        raise ConfigError(
            f"Invalid run-history database {original!r}: it needs a file, not memory. {_URL_HELP}"
        )
    return Path(location).expanduser()


def _read_only(query: str, original: str) -> bool:
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"mode"})
    modes = options.get("mode", ["rwc"])
    if unknown or len(modes) != 1 or modes[0] not in ("ro", "rw", "rwc"):
        raise ConfigError(
            f"Invalid run-history database {original!r}: the only option is mode=ro. {_URL_HELP}"
        )
    return modes[0] == "ro"


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch the database to WAL unless it already is (the mode is stored in the file)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            # Changing the journal mode needs an exclusive lock and SQLite does not always
            # wait for it through the busy handler when several processes open a new file.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}
