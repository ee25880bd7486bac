"""A deployment's run as a process of its own: `python -m dagrun run FILE:FLOW --param ...`.

Each run process leads a new process group (session), so whatever it starts (a local Dask
cluster's workers, a shell) can be stopped with it, and a signal sent to the service (Ctrl-C
in its terminal) does not reach the runs: the service decides how they end. Output goes to a
log file per run; the run's own log lines are in the history as usual. POSIX only.

    process = launch_run(command, env, log_path)
    process.poll()          # None while running, else the exit code (-N: killed by signal N)
    process.interrupt()     # SIGINT to the run: dagrun cancels it and records `Cancelled`
    process.kill()          # SIGKILL to its whole process group
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from dagrun.private_files import make_directories, open_append


class RunProcess(Protocol):
    """What the service needs of a launched run (tests may launch fakes)."""

    pid: int

    def poll(self) -> int | None: ...
    def interrupt(self) -> None: ...
    def kill(self) -> None: ...


class SubprocessRun:
    """A run's process, the leader of its own process group."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self._group_cleared = False

    def poll(self) -> int | None:
        code = self._popen.poll()
        if code is not None and not self._group_cleared:
            self._kill_group()  # stragglers the run left behind (workers of a killed driver)
        return code

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.send_signal(signal.SIGINT)

    def kill(self) -> None:
        self._kill_group()  # the leader is not reaped yet, so the group id is surely ours
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()
        self._popen.wait()
        self._group_cleared = True

    def _kill_group(self) -> None:
        # The group keeps the leader's pid as its id while any member lives, and a pid that is
        # still a group id is not handed out again, so this reaches only the run's processes.
        # Once the leader is reaped and the group is empty the id is free: clear it only once.
        if self._group_cleared:
            return
        if self._popen.returncode is not None:
            self._group_cleared = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def launch_run(command: list[str], env: Mapping[str, str], log_path: Path) -> SubprocessRun:
    """Start `command` in a new session with `env`, its output appended to `log_path`."""
    make_directories(log_path.parent)
    with open_append(log_path) as log:
        popen = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return SubprocessRun(popen, log_path)


def run_environment(deployment: str, flow_run_id: str, slot: str | None, database_url: str) -> dict[str, str]:
    """This process's environment plus what the run records about itself: its deployment, its
    schedule slot (ISO UTC, scheduled runs only), its id, and the database to record it in
    (`database_url`: an absolute SQLite path or a server database's URL)."""
    env = {
        **os.environ,
        "DAGRUN_DEPLOYMENT": deployment,
        "DAGRUN_FLOW_RUN_ID": flow_run_id,
        "DAGRUN_DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DAGRUN_DEPLOYMENT_SLOT", None)
    if slot is not None:
        env["DAGRUN_DEPLOYMENT_SLOT"] = slot
    return env


def run_command(flow_file: str, flow: Any, parameters: Mapping[str, Any]) -> list[str]:
    """The `dagrun run` command line that runs `flow` from `flow_file` with `parameters`.

    `--param NAME=VALUE` is read back as JSON unless the parameter is hinted `str`, in which
    case the text is taken as it is; so a string for a `str` parameter goes raw and every
    other value as JSON.
    """
    signature = flow.parameter_validator.signature.parameters
    command = [sys.executable, "-m", "dagrun", "run", f"{flow_file}:{flow.name}"]
    for name, value in parameters.items():
        annotation = signature[name].annotation if name in signature else inspect.Parameter.empty
        raw = value if isinstance(value, str) and annotation in (str, "str") else json.dumps(value)
        command += ["--param", f"{name}={raw}"]
    return command


def describe_exit(code: int) -> str:
    """'exited with code 1' or 'was killed by signal SIGKILL'."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def last_line(path: Path | None, limit: int = 300) -> str | None:
    """The last non-empty line of a run's output, shortened, for an error message."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line]
    if not lines:
        return None
    return lines[-1] if len(lines[-1]) <= limit else lines[-1][: limit - 3] + "..."
