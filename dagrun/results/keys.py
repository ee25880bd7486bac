"""Where result-store entries live: valid names, the layout under the root, and file access.

`envelope.py` decides what an entry's bytes mean and whether to trust them; this module
decides which names are allowed and how bytes get to and from a filesystem: `LocalFiles` (os
calls, fsync, atomic `os.replace`) or `FsspecFiles` (any fsspec URL: memory://, s3://, ...).

Layout under the store's root (task names never appear in a path; they live in headers):

    <root>/<key[:2]>/<key>                      a published entry
    <root>/<key[:2]>/.tmp-<key>-<random>        a write in progress (or left by a crash)
    <root>/corrupt/<key>-<time>-<random>        an entry that failed verification, moved aside

A local store's directories and entries take the permissions of its root, whatever the umask
of the process writing them (a worker's may differ from the CLI's): a root dagrun creates is
0700, so its entries are 0600; a root shared with a group (0770) gives 0770 and 0660.

Keys are lowercase hex, 16 to 128 digits (what `hash_struct` and md5/sha hex digests give), so
nothing a caller passes can climb out of the root or collide with a temp or quarantine name.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dagrun.errors import ConfigError
from dagrun.private_files import create_file, make_directories

KEY_PATTERN = re.compile(r"[0-9a-f]{16,128}")
TEMP_PREFIX = ".tmp-"
CORRUPT_DIR = "corrupt"
# A temp file this old belongs to a crashed writer (a live write finishes in far less).
STALE_TEMP_SECONDS = 3600.0
_MAX_TASK_NAME = 512
_FORBIDDEN_IN_TASK_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def validate_key(key: object) -> str:
    """Return `key` if it is a valid cache key, else raise ConfigError saying what is allowed."""
    if not isinstance(key, str) or KEY_PATTERN.fullmatch(key) is None:
        raise ConfigError(
            f"Invalid cache key {key!r}: a key is 16 to 128 lowercase hex digits "
            "(hash a custom key with dagrun.hashing.hash_struct first)"
        )
    return key


def validate_task_name(task_name: object) -> str:
    """Return `task_name` if it is safe to record, else raise ConfigError.

    Task names are only metadata, but one that looks like a path (`../x`, `a/b`, NUL, control
    characters) is refused outright so no later tool is tempted to use it as one.
    """
    if (
        not isinstance(task_name, str)
        or not task_name
        or len(task_name) > _MAX_TASK_NAME
        or task_name in (".", "..")
        or _FORBIDDEN_IN_TASK_NAME.search(task_name)
    ):
        raise ConfigError(
            f"Invalid task name {task_name!r} for the result store: it must be 1 to "
            f"{_MAX_TASK_NAME} characters without '/', '\\', NUL or control characters"
        )
    return task_name


def is_entry_name(directory: str, name: str) -> bool:
    """True for a published entry's file name inside its two-digit shard directory."""
    return KEY_PATTERN.fullmatch(name) is not None and name[:2] == directory


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def shard(key: str) -> str:
    """The directory (relative to the root) holding `key`'s entry."""
    return key[:2]


def temp_name(key: str) -> str:
    """A unique temp file name for a write of `key`, in the entry's own directory."""
    return f"{TEMP_PREFIX}{key}-{uuid.uuid4().hex}"


def corrupt_name(key: str) -> str:
    """A unique name under CORRUPT_DIR for an entry of `key` moved aside."""
    return f"{key}-{int(time.time())}-{uuid.uuid4().hex[:8]}"


# --- file access -------------------------------------------------------------------------------


def open_files(location: str) -> LocalFiles | FsspecFiles:
    """File access for a store location: a local path (or file:// URL) or any fsspec URL."""
    if "://" not in location and "::" not in location:
        return LocalFiles(location)
    fs, root = fsspec.core.url_to_fs(location)
    return LocalFiles(root) if isinstance(fs, LocalFileSystem) else FsspecFiles(fs, root)


class LocalFiles:
    """Entries on a local filesystem: plain os calls, fsync, and an atomic os.replace."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._modes: tuple[int, int] | None = None  # for new directories, new entries

    def join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def writers_besides_owner(self, path: str) -> str | None:
        """Who besides this user (and root) can write the entry at `path`, or None: the
        root, the entry's directory or the entry is group- or world-writable or foreign."""
        for checked in (self.root, os.path.dirname(path), path):
            status = os.stat(checked)
            if status.st_uid not in (os.geteuid(), 0):
                return f"{checked} is owned by another user (uid {status.st_uid})"
            if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                kind = "directory" if stat.S_ISDIR(status.st_mode) else "entry"
                return (
                    f"the {kind} {checked} is group- or world-writable "
                    f"(mode {stat.S_IMODE(status.st_mode):04o})"
                )
        return None

    def url(self, path: str) -> str:
        return path

    def open_read(self, path: str) -> tuple[Any, int, object]:
        """(open file, size, identity); the identity tells a later replacement of the file apart."""
        file = open(path, "rb", buffering=0)  # noqa: SIM115 - the caller closes it
        try:
            status = os.fstat(file.fileno())
        except BaseException:
            file.close()
            raise
        return file, status.st_size, _identity(status)

    def write(self, path: str, temp_name: str, chunks: list[bytes | memoryview]) -> None:
        """Publish `chunks`, back to back, at `path` atomically (temp file, fsync, rename).

        A failed write removes its temp file.
        """
        directory = os.path.dirname(path)
        directory_mode, file_mode = self._new_modes()
        make_directories(directory, directory_mode)
        temp_path = os.path.join(directory, temp_name)
        try:
            with open(create_file(temp_path, file_mode), "wb") as file:
                file.writelines(chunks)  # large frames go straight to write(2), uncopied
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_path, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
            raise
        # Make the rename itself durable; not every filesystem lets a directory be fsynced.
        with contextlib.suppress(OSError):
            directory_descriptor = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(directory_descriptor)
            finally:
                os.close(directory_descriptor)

    def move_aside(self, path: str, identity: object, destination: str) -> bool:
        try:
            # A writer may have published a good entry since we read the bad one: keep it.
            if identity is not None and _identity(os.stat(path)) != identity:
                return False
            make_directories(os.path.dirname(destination), self._new_modes()[0])
            os.replace(path, destination)
        except FileNotFoundError:
            return False
        return True

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def mtime(self, path: str) -> float:
        try:
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return time.time()

    def _new_modes(self) -> tuple[int, int]:
        """(directory mode, entry mode) from the root's permissions; creates a missing root."""
        if self._modes is None:
            make_directories(self.root)
            root_mode = stat.S_IMODE(os.stat(self.root).st_mode)
            self._modes = (root_mode & 0o2777, root_mode & 0o666)
        return self._modes


class FsspecFiles:
    """Entries on any other fsspec filesystem; temp-then-move is the best atomicity it offers
    (object stores publish a file whole when it is closed)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def writers_besides_owner(self, path: str) -> str | None:
        """Anyone with access to the storage may have written the entry: dagrun cannot tell."""
        return "it is an fsspec store, whose writers dagrun cannot check"

    def open_read(self, path: str) -> tuple[Any, int, object]:
        file = self.fs.open(path, "rb")
        size = getattr(file, "size", None)  # the open file's own size: it may have been replaced
        return file, self.fs.size(path) if size is None else size, None

    def write(self, path: str, temp_name: str, chunks: list[bytes | memoryview]) -> None:
        """Write to a temp name, then move it over `path`; a failed write removes the temp."""
        directory = path.rsplit("/", 1)[0]
        self.fs.makedirs(directory, exist_ok=True)
        temp_path = f"{directory}/{temp_name}"
        try:
            with self.fs.open(temp_path, "wb") as file:
                for chunk in chunks:
                    file.write(chunk)
            self.fs.mv(temp_path, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm(temp_path)
            raise

    def move_aside(self, path: str, identity: object, destination: str) -> bool:
        try:
            self.fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(path, destination)
        except FileNotFoundError:
            return False
        return True

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path)

    def listdir(self, path: str) -> list[str]:
        try:
            listing = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in listing]

    def mtime(self, path: str) -> float:
        try:
            return self.fs.modified(path).timestamp()
        except Exception:  # not every filesystem records it: treat the file as fresh
            return time.time()


def _identity(status: os.stat_result) -> tuple[int, int, int]:
    return (status.st_dev, status.st_ino, status.st_mtime_ns)
