"""Live progress on a terminal: completed / running / failed / cached counts and elapsed time.

Shown only when stderr is a terminal (and `DAGRUN_PROGRESS` is not `off`), so logs written to
files or pipes stay exactly the log lines. Log lines printed meanwhile scroll above it. The
display subscribes to the run's task runs (`RunObserver`): it counts them as they are created
and reach their final states (subflow runs' included).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from dagrun.observers import RunObserver
from dagrun.states import State, StateType
from dagrun.task_run_record import TaskRun


def progress_wanted() -> bool:
    if os.environ.get("DAGRUN_PROGRESS", "on").strip().lower() in {"0", "off", "false", "no"}:
        return False
    return sys.stderr.isatty()


_CATEGORIES = {
    StateType.COMPLETED: "completed", StateType.CACHED: "cached", StateType.FAILED: "failed",
    StateType.CRASHED: "failed", StateType.NOT_RUN: "not run", StateType.CANCELLED: "not run",
}


def category(state: State) -> str:
    """The display's category of a task run in `state`."""
    return _CATEGORIES.get(state.type, "running")


def describe(flow_run_name: str, counts: Counter, elapsed: float) -> str:
    return (
        f"{flow_run_name}: {counts['completed']} completed, {counts['running']} running, "
        f"{counts['failed']} failed, {counts['cached']} cached"
        + (f", {counts['not run']} not run" if counts["not run"] else "")
        + f" | {elapsed:.1f} s"
    )


class ProgressDisplay(RunObserver):
    """A rich live line for one top-level flow run, refreshed a few times a second."""

    def __init__(self, flow_run_name: str) -> None:
        self._flow_run_name = flow_run_name
        self._counts: Counter = Counter()
        self._final: dict[str, str] = {}  # task run -> its category (a recomputed hit ends twice)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None

    def task_run_created(self, run: TaskRun, flow_run_id: str) -> None:
        self._counts["running"] += 1

    def task_run_state(self, run: TaskRun, state: State, flow_run_id: str) -> None:
        new = category(state)
        self._counts[self._final.get(run.id, "running")] -= 1
        self._counts[new] += 1
        self._final[run.id] = new

    def __enter__(self) -> ProgressDisplay:
        from rich.console import Console
        from rich.live import Live

        self._started = time.monotonic()
        self._live = Live(self._line(), console=Console(stderr=True), refresh_per_second=4,
                          transient=True, redirect_stdout=True, redirect_stderr=True)
        self._live.start()
        self._thread = threading.Thread(target=self._refresh, daemon=True, name="dagrun-progress")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is None:
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._live.stop()

    def _line(self) -> str:
        return describe(self._flow_run_name, self._counts, time.monotonic() - self._started)

    def _refresh(self) -> None:
        while not self._stop.wait(0.25):
            self._live.update(self._line())
