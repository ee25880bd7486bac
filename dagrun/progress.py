"""Live progress on a terminal: completed / running / failed / cached counts and elapsed time.

Shown only when stderr is a terminal (and `DAGRUN_PROGRESS` is not `off`), so logs written to
files or pipes stay exactly the log lines. Log lines printed meanwhile scroll above it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from typing import Any

from dagrun.states import StateType


def progress_wanted() -> bool:
    if os.environ.get("DAGRUN_PROGRESS", "on").strip().lower() in {"0", "off", "false", "no"}:
        return False
    return sys.stderr.isatty()


def summarize(runs: list[Any]) -> Counter:
    """Counts of task runs by the display's categories."""
    counts: Counter = Counter()
    for run in list(runs):
        kind = run.state.type
        if kind is StateType.COMPLETED:
            counts["completed"] += 1
        elif kind is StateType.CACHED:
            counts["cached"] += 1
        elif kind in (StateType.FAILED, StateType.CRASHED):
            counts["failed"] += 1
        elif kind is StateType.NOT_RUN or kind is StateType.CANCELLED:
            counts["not run"] += 1
        else:
            counts["running"] += 1
    return counts


def describe(flow_run_name: str, counts: Counter, elapsed: float) -> str:
    return (
        f"{flow_run_name}: {counts['completed']} completed, {counts['running']} running, "
        f"{counts['failed']} failed, {counts['cached']} cached"
        + (f", {counts['not run']} not run" if counts["not run"] else "")
        + f" | {elapsed:.1f} s"
    )


class ProgressDisplay:
    """A rich live line for one top-level flow run, refreshed a few times a second."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None

    def __enter__(self) -> ProgressDisplay:
        if not progress_wanted():
            return self
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
        tasks = self._engine.tasks
        counts = summarize(tasks.runs) if tasks is not None else Counter()
        return describe(self._engine.flow_run_name, counts, time.monotonic() - self._started)

    def _refresh(self) -> None:
        while not self._stop.wait(0.25):
            self._live.update(self._line())
