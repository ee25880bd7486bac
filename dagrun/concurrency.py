"""Tag concurrency limits: at most N task runs with a given tag execute at once, cluster-wide.

A limit is a row of the run-history database (`dagrun concurrency set TAG N`), so every
driver sharing that database sees the same limits. Enforcement is the executor's: the Dask
executor reads the limits once per flow run, for the tags of the tasks it ships, and each
task run holds one lease of a `distributed.Semaphore` per limited tag while its attempts run,
so the cap holds across all flows that share a scheduler. The in-process executor runs tasks
one at a time in the driver and does not apply limits.

| function                        | does                                               |
|---------------------------------|----------------------------------------------------|
| `set_limit(store, tag, limit)`  | create or change a limit (one write transaction)   |
| `delete_limit(store, tag)`      | remove it; False if there was none                 |
| `list_limits(store)`            | every limit, by tag                                |
| `read_limits()`                 | tag -> limit from the configured database, for a driver |

A changed limit applies to flow runs that start afterwards; runs already going keep the
limit they read when they started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dagrun.errors import ConfigError
from dagrun.history import HistoryStore

logger = logging.getLogger("dagrun.concurrency")


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most `limit` task runs tagged `tag` execute at once; `updated` is epoch seconds."""

    tag: str
    limit: int
    updated: float

    def __post_init__(self) -> None:
        check_tag(self.tag)
        check_limit(self.limit)


def check_tag(tag: object) -> str:
    """`tag` if it can name a limit: a non-empty string without surrounding whitespace."""
    if not isinstance(tag, str) or not tag or tag != tag.strip():
        raise ConfigError(
            f"A concurrency limit's tag must be a non-empty string without surrounding spaces, "
            f"got {tag!r}"
        )
    return tag


def check_limit(limit: object) -> int:
    """`limit` if it is a whole number >= 1 (0 would make tagged tasks wait forever)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(
            f"A concurrency limit must be a whole number >= 1, got {limit!r} "
            "(to lift a limit, delete it: `dagrun concurrency delete TAG`)"
        )
    return limit


def set_limit(store: HistoryStore, tag: str, limit: int) -> ConcurrencyLimit:
    """Create or change the limit of `tag`."""
    entry = ConcurrencyLimit(tag, limit, time.time())
    with store.write_transaction() as connection:
        connection.execute(
            "INSERT INTO concurrency_limits (tag, max_running, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (tag) DO UPDATE SET max_running = excluded.max_running, "
            "updated = excluded.updated",
            (entry.tag, entry.limit, entry.updated),
        )
    return entry


def delete_limit(store: HistoryStore, tag: str) -> bool:
    """Remove the limit of `tag`; False if it had none."""
    with store.write_transaction() as connection:
        cursor = connection.execute("DELETE FROM concurrency_limits WHERE tag = ?", (tag,))
        return bool(cursor.rowcount > 0)


def list_limits(store: HistoryStore) -> list[ConcurrencyLimit]:
    """Every limit, ordered by tag."""
    with store.read_transaction() as connection:
        rows = connection.execute(
            "SELECT tag, max_running, updated FROM concurrency_limits ORDER BY tag"
        ).fetchall()
    return [ConcurrencyLimit(row["tag"], row["max_running"], row["updated"]) for row in rows]


def read_limits() -> Mapping[str, int]:
    """tag -> limit from `DAGRUN_DATABASE_URL` / `$DAGRUN_HOME/dagrun.db`; read by a driver
    once per flow run, and only when one of its tasks has tags.

    If the database cannot be read, one warning is logged and tagged tasks run unlimited:
    like the run history, limits never stop a flow from running.
    """
    try:
        with HistoryStore.from_env() as store:
            limits = list_limits(store)
    except Exception as exc:  # noqa: BLE001 - the flow runs without limits, loudly
        logger.warning(
            "Concurrency limits unavailable, tagged tasks run without them: %s", exc
        )
        return MappingProxyType({})
    return MappingProxyType({entry.tag: entry.limit for entry in limits})
