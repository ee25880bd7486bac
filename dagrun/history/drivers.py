"""Is a run's driver process still alive? Told at once on the driver's own machine.

A run records where its driver runs: the host name and pid, the *process space* (the
machine's boot id and the PID namespace: a pid means the same process only within one) and
the driver's start time. A reader in the same space whose look-up finds the pid gone, a
zombie, or taken by a later process (another start time) knows the driver died, and the run
is shown `Crashed` without waiting for its heartbeat lease. Anywhere else (another host or
container, a system without /proc) only the lease tells.

    space, started = this_process()          # recorded with the run
    driver_is_gone(pid, started)             # asked by a reader in the same space
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

# Start times are whole clock ticks after boot; the boot time they are counted from can be
# nudged by a second when the clock is adjusted, so a pid is the same process within this.
_SAME_START = 1.0
_this: tuple[int, str | None, float | None] | None = None  # (pid, space, start), per process


def process_space() -> str | None:
    """'<boot id> <PID namespace>' of this process; None where there is no /proc to tell."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot_id} {namespace}"


def this_process() -> tuple[str | None, float | None]:
    """(process space, start time) of the calling process, for the runs it drives."""
    global _this
    if _this is None or _this[0] != os.getpid():  # computed once, again after a fork
        space = process_space()
        try:
            started = psutil.Process().create_time() if space is not None else None
        except psutil.Error:
            started = None
        _this = (os.getpid(), space, started)
    return _this[1], _this[2]


def driver_is_gone(pid: int, started: float) -> bool:
    """Whether the process `pid` that started at `started` (in this process space) has ended."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return abs(process.create_time() - started) > _SAME_START
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # not allowed to look: it may well be alive
        return False
