"""A cap on how much log one task run attempt sends: a chatty task cannot flood the driver.

The cap is enforced where the lines are made (on the worker, in `run_task`), so neither the
scheduler, the driver, the terminal nor the run history ever receives the flood. Lines within
the first half of the cap go out as they are logged (they reach the driver while the task
runs); after that, only the most recent lines are kept, in a ring the size of the other half.
When the attempt ends (it returns, raises or is retried) the ring goes out behind one WARNING
line saying what was dropped:

    ... 912,345 lines (91,234,567 bytes) dropped: a task run attempt's log is capped at
    10,000,000 bytes (DAGRUN_LOG_CAP_BYTES) ...

| variable                | default      | meaning                                            |
|-------------------------|--------------|----------------------------------------------------|
| `DAGRUN_LOG_CAP_BYTES`  | `10000000`   | bytes of log per task run attempt; `off` (or `0`)  |
|                         |              | for no cap; at least 4096                          |

A line counts its message's UTF-8 bytes plus `LINE_OVERHEAD` (what a row costs in the run
history besides its message), so the cap bounds the history's growth, not just the text.
A single message longer than an eighth of the cap is cut to that length.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Mapping

from dagrun.context import LogSink
from dagrun.errors import ConfigError

CAP_VARIABLE = "DAGRUN_LOG_CAP_BYTES"
DEFAULT_CAP_BYTES = 10_000_000
MIN_CAP_BYTES = 4096
LINE_OVERHEAD = 200  # bytes of a stored log row besides its message (ids, time, level, index)
_MARKER_RESERVE = LINE_OVERHEAD + 300  # room kept in the tail for the "dropped" line


def log_cap_bytes(environ: Mapping[str, str] = os.environ) -> int | None:
    """The cap from `DAGRUN_LOG_CAP_BYTES` (None: no cap); a ConfigError naming it if invalid."""
    raw = environ.get(CAP_VARIABLE, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_CAP_BYTES
    if raw.lower() in {"off", "none", "0"}:
        return None
    try:
        cap = int(raw)
    except ValueError:
        cap = -1
    if cap < MIN_CAP_BYTES:
        raise ConfigError(
            f"{CAP_VARIABLE}={environ[CAP_VARIABLE]!r} is not a valid log cap: give a whole number of "
            f"bytes of at least {MIN_CAP_BYTES} (e.g. {DEFAULT_CAP_BYTES}), or 'off' for no cap"
        )
    return cap


class CappedLog:
    """The log sink of one task run: passes lines to `sink` until half of `cap` is used, then
    keeps only the newest lines (the other half) until `end_attempt`, which sends them behind
    one line counting what was dropped and starts the next attempt's budget afresh.
    With `cap` None every line passes.

    Thread-safe: code in a task may log from several threads.
    """

    def __init__(self, sink: LogSink, cap: int | None) -> None:
        self._sink = sink
        self._cap = cap
        self._head_budget = cap // 2 if cap is not None else 0
        self._tail_budget = cap - self._head_budget - _MARKER_RESERVE if cap is not None else 0
        self._max_message = max(cap // 8, 256) if cap is not None else 0
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        self._head_left = self._head_budget
        self._tail: deque[tuple[dict, int]] | None = None  # set once the head is full
        self._tail_bytes = 0
        self._dropped_lines = 0
        self._dropped_bytes = 0  # message bytes, what the task printed
        self._first_dropped: dict | None = None

    def __call__(self, line: dict) -> None:
        if self._cap is None:
            self._sink(line)
            return
        line = self._shorten(line)
        size = len(line["message"].encode("utf-8", "replace"))
        cost = size + LINE_OVERHEAD
        with self._lock:
            if self._tail is None:
                if cost <= self._head_left:
                    self._head_left -= cost
                    self._sink(line)  # under the lock: lines of one run keep their order
                    return
                self._tail = deque()
            self._tail.append((line, cost))
            self._tail_bytes += cost
            while self._tail_bytes > self._tail_budget:
                old, old_cost = self._tail.popleft()
                self._tail_bytes -= old_cost
                self._dropped_lines += 1
                self._dropped_bytes += old_cost - LINE_OVERHEAD
                if self._first_dropped is None:
                    self._first_dropped = old

    def _shorten(self, line: dict) -> dict:
        message = line["message"]
        if len(message) <= self._max_message:
            return line
        cut = len(message) - self._max_message
        return {**line, "message": f"{message[:self._max_message]} ... [{cut:,} more characters dropped]"}

    def end_attempt(self) -> None:
        """Send the kept tail, behind one line counting the dropped lines if any were."""
        with self._lock:
            tail, first = self._tail or (), self._first_dropped
            if first is not None:
                self._sink(self._marker(first))
            for line, _ in tail:
                self._sink(line)
            self._start()

    def _marker(self, first_dropped: dict) -> dict:
        message = (
            f"... {self._dropped_lines:,} lines ({self._dropped_bytes:,} bytes) dropped: a task run "
            f"attempt's log is capped at {self._cap:,} bytes ({CAP_VARIABLE}) ..."
        )
        return {**first_dropped, "level": logging.WARNING, "logger": "dagrun.task_run", "message": message}

