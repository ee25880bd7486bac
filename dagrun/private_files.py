"""Files and directories only their owner can read: what dagrun creates under its home.

`$DAGRUN_HOME` holds run parameters, log lines and cached results, so what dagrun creates is
0700 (directories) and 0600 (files) whatever the umask of the process creating it: a Dask
worker may run with another umask than the CLI, so modes are set explicitly (mkdir then chmod,
an exclusive os.open then fchmod), never left to the umask. What already exists keeps its
mode: a user may have opened it on purpose, and `dagrun_home()` says so once.

    make_directories(path)               # path and its missing parents, 0700
    descriptor = create_file(path)       # a new file, 0600; FileExistsError if it exists
    with open_append(path) as log: ...   # created 0600 if missing, else appended to
"""

from __future__ import annotations

import os
from typing import BinaryIO

PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_directories(path: str | os.PathLike[str], mode: int = PRIVATE_DIRECTORY_MODE) -> None:
    """Create `path` and its missing parents with exactly `mode`; existing ones are kept."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if os.path.isdir(directory):
                continue  # made by a concurrent process: theirs to keep
            raise
        os.chmod(directory, mode)  # the umask may have taken bits away


def create_file(path: str | os.PathLike[str], mode: int = PRIVATE_FILE_MODE) -> int:
    """An open descriptor (write-only) of a new file with exactly `mode`.

    Raises FileExistsError if `path` exists: an existing file is never taken over."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(descriptor, mode)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def ensure_file(path: str | os.PathLike[str]) -> bool:
    """Create an empty private file at `path` unless one exists (an SQLite database, whose
    -wal and -shm files then get the same mode); True if this call created it."""
    try:
        os.close(create_file(path))
    except FileExistsError:
        return False
    return True


def open_append(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for appending bytes; created private if it does not exist."""
    ensure_file(path)
    return open(path, "ab")  # noqa: SIM115 - the caller closes it


def open_to_others(mode: int) -> bool:
    """True when a mode gives the group or other users any permission."""
    return bool(mode & 0o077)
