"""The result store: checksummed, optionally signed, atomically written entries keyed by hex keys.

Workers read and write it directly (the store pickles as its location and key, and opens its
filesystem lazily), so the driver only ever sees keys and `EntryInfo` metadata.

An entry's bytes and the checks that decide whether to trust them are in `envelope`; where an
entry lives and how its bytes reach the filesystem are in `keys`. This module applies the trust
policy: `get` runs every check before anything is deserialized, `lookup` and `info` read the
head only. A failing entry is logged on the "dagrun.results" logger, moved to `<root>/corrupt/`,
and reported as a `CacheMiss`, so the task recomputes. An expired entry is a plain miss.

Unpickling runs code, so without a signing key a pickled entry is loaded only from a store
nobody else can write: a local directory owned by this user (or root) that is not group- or
world-writable. From any other store (an fsspec URL, a shared directory) pickled entries are
refused, as a miss, with one warning saying how to set a key or opt in
(`DAGRUN_RESULTS_TRUST_PICKLE=1`); msgpack entries load anywhere (loading them runs no code).

Writes go to a unique temp file in the entry's directory, are flushed and fsynced, then renamed
over the entry (`os.replace`, atomic); two writers of one key both succeed and one file wins.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from dagrun.config import dagrun_home, env_flag
from dagrun.errors import ConfigError, ResultStoreError, SerializationError
from dagrun.results import keys
from dagrun.results.envelope import (
    EntryInfo,
    Reader,
    Rejected,
    encode,
    entry_info,
    read_head,
    verify_payload,
)
from dagrun.results.keys import FsspecFiles, LocalFiles
from dagrun.results.serializers import check_serializer, dumps, loads

logger = logging.getLogger("dagrun.results")

_HEAD_READ_GUESS = 64 * 1024  # room for the head of almost every entry
_MIN_SIGNING_KEY_BYTES = 16
_SHARD_PATTERN = re.compile(r"[0-9a-f]{2}")
_TRUST_PICKLE_VARIABLE = "DAGRUN_RESULTS_TRUST_PICKLE"
_warned_refusals: set[str] = set()  # store locations whose refusal was logged in this process


class CacheMiss(KeyError):
    """No usable entry for a key: absent, expired, or rejected (`reason` says which)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"No usable result entry {self.key}: {self.reason}"


class ResultStore:
    """A content-addressed result store at a local path or any fsspec URL.

    | call                                 | does                                              |
    |--------------------------------------|---------------------------------------------------|
    | `put(key, value, task_name=...)`     | serialize, hash (and MAC, sign), write atomically |
    | `lookup(key)`                        | header only: a usable (unexpired, signed) entry?  |
    | `get(key)`                           | the verified value, or `CacheMiss`                |
    | `info(key)` / `entries(task_name)`   | headers, expired ones included                    |
    | `clear(task_name=, older_than=)`     | remove entries (and stale temp files)             |
    | `refusal(info)`                      | why `get` will not unpickle an entry, or None     |

    `trust_pickle=True` loads pickled entries from a store others can write, without a key.
    """

    __slots__ = ("_location", "_signing_key", "_trust_pickle", "_files")

    def __init__(
        self,
        location: str | os.PathLike,
        *,
        signing_key: bytes | None = None,
        trust_pickle: bool = False,
    ) -> None:
        location = os.fspath(location)
        if not isinstance(location, str) or not location:
            raise ConfigError(f"Invalid result store location {location!r}")
        if signing_key is not None and (
            not isinstance(signing_key, bytes) or len(signing_key) < _MIN_SIGNING_KEY_BYTES
        ):
            raise ConfigError(
                "The result store signing key (DAGRUN_RESULTS_KEY) must be bytes, at least "
                f"{_MIN_SIGNING_KEY_BYTES} long"
            )
        # Local paths are made absolute now, so a pickled store means the same directory.
        self._location = _absolute_local(location)
        self._signing_key = signing_key
        self._trust_pickle = bool(trust_pickle)
        self._files: LocalFiles | FsspecFiles | None = None

    @classmethod
    def from_env(cls, location: str | None = None) -> ResultStore:
        """The store at `location`, else `$DAGRUN_RESULTS`, else `$DAGRUN_HOME/results`;
        signed with `$DAGRUN_RESULTS_KEY` when it is set, trusting pickles from any writer
        when `$DAGRUN_RESULTS_TRUST_PICKLE` is 1."""
        location = location or os.environ.get("DAGRUN_RESULTS") or str(dagrun_home() / "results")
        secret = os.environ.get("DAGRUN_RESULTS_KEY")
        return cls(
            location,
            signing_key=secret.encode() if secret else None,
            trust_pickle=env_flag(_TRUST_PICKLE_VARIABLE),
        )

    @property
    def location(self) -> str:
        return self._location

    def __repr__(self) -> str:
        return f"ResultStore({self._location!r}, signed={self._signing_key is not None})"

    def __getstate__(self) -> dict[str, Any]:
        # The filesystem object stays behind: each process opens its own, lazily.
        return {
            "location": self._location,
            "signing_key": self._signing_key,
            "trust_pickle": self._trust_pickle,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._location = state["location"]
        self._signing_key = state["signing_key"]
        self._trust_pickle = state["trust_pickle"]
        self._files = None

    # --- writing -----------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: Any,
        *,
        task_name: str,
        serializer: str = "auto",
        expires_at: float | None = None,
    ) -> EntryInfo:
        """Store `value` under `key`, replacing any entry; returns the new entry's header."""
        keys.validate_key(key)
        keys.validate_task_name(task_name)
        check_serializer(serializer)
        if expires_at is not None and not isinstance(expires_at, (int, float)):
            raise ConfigError(f"expires_at must be a POSIX timestamp, got {expires_at!r}")
        try:
            used, frames = dumps(value, serializer)
        except SerializationError as exc:
            raise SerializationError(
                f"Cannot store the result of task {task_name!r}: {exc}"
            ) from exc
        header, chunks = encode(key, task_name, used, frames, expires_at, self._signing_key)
        files = self._open()
        path = files.join(keys.shard(key), key)
        try:
            files.write(path, keys.temp_name(key), chunks)
        except Exception as exc:  # ENOSPC, permissions, a remote store's own errors
            raise ResultStoreError(
                f"Could not write the result of task {task_name!r} to the result store at "
                f"{self._location}: {type(exc).__name__}: {exc}"
            ) from exc
        return entry_info(header, files.url(path))

    # --- reading -----------------------------------------------------------------------------

    def lookup(self, key: str) -> EntryInfo | None:
        """The header of a usable entry: present, unexpired, signed if a key is set.

        Reads only the head, so the payload's checksum and MAC are checked later, by `get`."""
        info = self.info(key)
        if info is None or _expired(info) or self.refusal(info) is not None:
            return None
        return info

    def info(self, key: str) -> EntryInfo | None:
        """The entry's header, expired or not; None if absent or rejected."""
        opened = self._open_entry(key)
        if opened is None:
            return None
        path, file, size, identity = opened
        try:
            with file:
                reader = Reader(file, size, min(size, _HEAD_READ_GUESS))
                head = read_head(reader, key, self._open().url(path), self._signing_key)
        except Rejected as rejected:
            self._discard(key, path, identity, rejected)
            return None
        except OSError as exc:
            raise ResultStoreError(f"Could not read result entry {key}: {exc}") from exc
        return head.info

    def get(self, key: str) -> Any:
        """The entry's value, verified before it is deserialized; raises CacheMiss otherwise."""
        opened = self._open_entry(key)
        if opened is None:
            raise CacheMiss(key, "no entry")
        path, file, size, identity = opened
        try:
            with file:
                reader = Reader(file, size, size)
                head = read_head(reader, key, self._open().url(path), self._signing_key)
                if _expired(head.info):
                    raise CacheMiss(key, "expired")
                refusal = self.refusal(head.info)
                if refusal is not None:
                    raise CacheMiss(key, refusal)
                verify_payload(reader, head, key, self._signing_key)
        except Rejected as rejected:
            self._discard(key, path, identity, rejected)
            raise CacheMiss(key, rejected.reason) from None
        except OSError as exc:
            raise ResultStoreError(f"Could not read result entry {key}: {exc}") from exc
        frames = [reader.buffer[start : start + length] for start, length in head.frames]
        try:
            return loads(head.info.serializer, frames)
        except SerializationError as exc:
            # Authentic but unloadable here (a class that no longer exists): recompute, keep it.
            logger.warning(
                "Could not load result entry %s of %r: %s", key, head.info.task_name, exc
            )
            raise CacheMiss(key, str(exc)) from exc

    def entries(self, task_name: str | None = None) -> Iterator[EntryInfo]:
        """Headers of all entries (of one task if given), expired ones included, by key."""
        if task_name is not None:
            keys.validate_task_name(task_name)
        files = self._open()
        for shard in sorted(files.listdir(files.root)):
            if _SHARD_PATTERN.fullmatch(shard) is None:
                continue
            for name in sorted(files.listdir(files.join(shard))):
                if keys.is_entry_name(shard, name):
                    info = self.info(name)
                    if info is not None and task_name in (None, info.task_name):
                        yield info

    def clear(self, *, task_name: str | None = None, older_than: float | None = None) -> int:
        """Remove entries (of one task, created more than `older_than` seconds ago, if given).

        Returns how many entries were removed. Temp files left by crashed writers are removed
        once they are an hour old (younger ones may be writes in progress); entries moved
        aside as corrupt are removed too when no task is given.
        """
        if older_than is not None and (not isinstance(older_than, (int, float)) or older_than < 0):
            raise ConfigError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        now = time.time()
        cutoff = None if older_than is None else now - older_than
        files = self._open()
        removed = 0
        for info in list(self.entries(task_name)):
            if cutoff is None or info.created < cutoff:
                files.remove(files.join(keys.shard(info.key), info.key))
                removed += 1
        for shard in files.listdir(files.root):
            if _SHARD_PATTERN.fullmatch(shard) is None:
                continue
            for name in files.listdir(files.join(shard)):
                path = files.join(shard, name)
                if keys.is_temp_name(name) and files.mtime(path) < now - keys.STALE_TEMP_SECONDS:
                    files.remove(path)
        if task_name is None:
            for name in files.listdir(files.join(keys.CORRUPT_DIR)):
                path = files.join(keys.CORRUPT_DIR, name)
                if cutoff is None or files.mtime(path) < cutoff:
                    files.remove(path)
        return removed

    def refusal(self, info: EntryInfo) -> str | None:
        """Why `get` will not deserialize this entry although it verifies, or None.

        Only a pickled entry of an unsigned store that others can write is refused; the
        first refusal in a process logs one warning saying what to do."""
        if info.serializer != "cloudpickle" or self._signing_key is not None or self._trust_pickle:
            return None
        files = self._open()
        try:
            writers = files.writers_besides_owner(files.join(keys.shard(info.key), info.key))
        except FileNotFoundError:
            return "no entry"
        except OSError as exc:
            raise ResultStoreError(f"Could not read result entry {info.key}: {exc}") from exc
        if writers is None:
            return None
        if self._location not in _warned_refusals:
            _warned_refusals.add(self._location)
            logger.warning(
                "Not loading pickled results from the result store %s: %s, so whoever can write "
                "there could run code here; set DAGRUN_RESULTS_KEY (a secret shared by its "
                "users) to sign entries, or %s=1 to trust everyone who can write it",
                self._location, writers, _TRUST_PICKLE_VARIABLE,
            )
        return "pickled entry in a store others can write, and no DAGRUN_RESULTS_KEY"

    # --- internals ---------------------------------------------------------------------------

    def _open(self) -> LocalFiles | FsspecFiles:
        if self._files is None:
            self._files = keys.open_files(self._location)
        return self._files

    def _open_entry(self, key: str) -> tuple[str, Any, int, object] | None:
        """(path, open file, size, identity) of the entry for `key`, or None if there is none."""
        keys.validate_key(key)
        files = self._open()
        path = files.join(keys.shard(key), key)
        try:
            return (path, *files.open_read(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ResultStoreError(f"Could not read result entry {key}: {exc}") from exc

    def _discard(self, key: str, path: str, identity: object, rejected: Rejected) -> None:
        task = repr(rejected.task_name) if rejected.task_name else "unknown task"
        if not rejected.quarantine:
            logger.warning("Ignored result entry %s (%s): %s", key, task, rejected.reason)
            return
        files = self._open()
        aside = files.join(keys.CORRUPT_DIR, keys.corrupt_name(key))
        try:
            moved = files.move_aside(path, identity, aside)
        except OSError as exc:
            moved = False
            logger.warning("Could not move result entry %s aside: %s", key, exc)
        logger.warning(
            "Discarded result entry %s (%s): %s; %s", key, task, rejected.reason,
            f"moved to {files.url(aside)}" if moved else "left in place",
        )


def _expired(info: EntryInfo) -> bool:
    return info.expires_at is not None and info.expires_at <= time.time()


def _absolute_local(location: str) -> str:
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location or "::" in location:
        return location  # an fsspec URL, resolved lazily by the process that uses it
    return os.path.abspath(os.path.expanduser(location))
