"""How a URL names a run-history database, and everything specific to SQLite, in one place.

The rest of `dagrun.history` speaks DB-API 2 with `?` placeholders and SQL that SQLite and
PostgreSQL both accept (`ON CONFLICT ... DO UPDATE`, `COALESCE`, `CASE`, `LIMIT`, `DOUBLE
PRECISION`, `RETURNING`). What differs lives in a dialect object, `SQLiteDatabase` here or
`PostgresDatabase` (`dagrun.history.postgres`), which `parse_database_url` picks:

| attribute       | is                                                                        |
|-----------------|---------------------------------------------------------------------------|
| `url`           | a string that opens the same database again, e.g. in a child process      |
| `path`          | the SQLite file (None for a server database)                              |
| `Error`         | the base class of the errors its connections raise                        |
| `begin_write`   | begins a write transaction that waits for every other writer              |
| `begin_read`    | begins a read transaction: one snapshot for a multi-query answer          |
| `connect()`     | a new autocommit connection whose rows are dicts                          |
| `ddl(sql)`      | a migration statement with its type placeholders filled in                |
| `describe()`    | "SQLite database PATH" or the URL with its password masked, for messages  |
| `prepare()`     | creates what must exist before connecting (SQLite: the file's directory)  |
| `damaged(error)`| what to do when `error` says the database is damaged, else None           |
| `file_identity()` | SQLite: the file now at the path, to notice it deleted; None otherwise  |
| `writable()`    | the same database opened for writing                                      |

SQLite is tuned for many writers on one machine: WAL (readers never block the writer),
`synchronous=NORMAL` (safe in WAL; a power cut may lose the last commits, never corrupt),
a 30 s busy timeout, and `BEGIN IMMEDIATE` so a write transaction takes the write lock when
it starts rather than failing with "database is locked" when it tries to upgrade a read lock.
It needs SQLite 3.35 or newer (2021) for `RETURNING`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

from dagrun.config import dagrun_home
from dagrun.errors import ConfigError
from dagrun.private_files import ensure_file, make_directories
from dagrun.history.postgres import SCHEMES as POSTGRES_SCHEMES
from dagrun.history.postgres import PostgresDatabase, mask_password

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a connection waits for another process's write lock before giving up."""
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26  # result codes of a damaged file, a foreign one

_URL_HELP = (
    "DAGRUN_DATABASE_URL must be a file path, an SQLite URL such as "
    "sqlite:///relative/dagrun.db or sqlite:////absolute/dagrun.db (append ?mode=ro to open "
    "it read-only), or a PostgreSQL URL such as postgresql://user:password@host:5432/dbname"
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
            # Created private first: SQLite would make it 0644, and its -wal and -shm files
            # take the database file's mode.
            with contextlib.suppress(OSError):  # SQLite says what is wrong with the path
                if ensure_file(self.path):
                    self._remove_stale_journals()
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

    @property
    def url(self) -> str:
        """The absolute path, or an `sqlite:///` URL when read-only, for another process."""
        absolute = self.path.resolve()
        return f"sqlite:///{absolute}?mode=ro" if self.read_only else str(absolute)

    def ddl(self, statement: str) -> str:
        """A migration statement with this dialect's spelling of its type placeholders."""
        return statement.format(serial_primary_key="INTEGER PRIMARY KEY")

    def describe(self) -> str:
        return f"SQLite database {self.path}" + (" (read-only)" if self.read_only else "")

    def prepare(self) -> None:
        """Create the file's directory, private (SQLite creates the file, not its directory)."""
        if not self.read_only:
            make_directories(self.path.parent)

    def _remove_stale_journals(self) -> None:
        """-wal and -shm files beside a database file just created belong to one deleted
        under processes still using them: SQLite would read the old pages into the new file.
        Those processes keep their open copies."""
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file now at `path`; None if there is none. A change means
        the file was deleted or replaced under connections still open on the old one."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (status.st_dev, status.st_ino)

    def damaged(self, error: Exception) -> str | None:
        """What to do when `error` says the file is damaged or not a database, else None."""
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # the primary result code
        if code not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return None
        path = shlex.quote(str(self.path))
        return (
            f"move it aside (mv {path} {path}.damaged) and dagrun starts a new one; "
            f"`sqlite3 {path} .recover` may save its runs"
        )

    def writable(self) -> SQLiteDatabase:
        """The same file, opened for writing even if this was opened with `?mode=ro`."""
        return replace(self, read_only=False)


Database = SQLiteDatabase | PostgresDatabase
"""A run-history database: either dialect has every attribute in the module doc's table."""


def parse_database_url(url_or_path: str | os.PathLike[str]) -> Database:
    """The database a path, `sqlite:///` or `postgresql://` URL names; anything else is a
    `ConfigError` naming DAGRUN_DATABASE_URL (with any password masked)."""
    if isinstance(url_or_path, os.PathLike):
        return SQLiteDatabase(Path(url_or_path))
    if not isinstance(url_or_path, str):
        raise ConfigError(f"Invalid run-history database {url_or_path!r}: {_URL_HELP}")
    text = url_or_path.strip()
    scheme = text.split("://", 1)[0] if "://" in text else None
    if scheme in POSTGRES_SCHEMES:
        return PostgresDatabase.from_url(text)
    if text.startswith("sqlite:///"):
        # SQLAlchemy's convention: three slashes then a relative path, four for an absolute one.
        location, _, query = text[len("sqlite:///") :].partition("?")
        return SQLiteDatabase(_file_path(location, text), _read_only(query, text))
    if scheme is not None or text.startswith("sqlite:"):
        scheme = text.split(":", 1)[0]
        raise ConfigError(
            f"Unsupported run-history database {mask_password(text)!r} (scheme {scheme!r}): "
            f"{_URL_HELP}"
        )
    return SQLiteDatabase(_file_path(text, text))


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
