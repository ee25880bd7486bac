"""How log lines travel from Dask workers to the driver: in batches.

A Dask event costs a thread hop on the worker, a message through the scheduler and a callback
in the driver, so lines are not sent one event each: a worker gathers them and sends one
event per `MAX_LINES` lines or `MAX_BYTES` bytes, or `INTERVAL` seconds after the first line
of a batch, whichever comes first (and at once at the end of each task call, so a run's lines
reach the driver before its result does). Task events have a channel of their own (`dask_events`).

A batch travels as one msgpack-packed `bytes` value: the scheduler keeps the last 1,000 events
of a topic (`distributed.admin.low-level-log-length`), and one bytes object per batch keeps
that small (at most 1,000 x ~`MAX_BYTES`) where a list of dicts would cost ~1 KB per line.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any

import msgpack
from distributed.comm.core import CommClosedError

LOG_TOPIC = "dagrun-logs"
MAX_LINES = 256
MAX_BYTES = 16_384  # estimated packed size of a batch
INTERVAL = 0.05  # seconds a line may wait for others before its batch leaves
_LINE_FIELDS_BYTES = 160  # ids, names, time and level of a line, packed


class LineBatches:
    """The lines a worker has not sent yet. Thread-safe: task threads add, the worker's
    event loop sends what the timer finds."""

    def __init__(self, worker: Any) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._lines: list[dict] = []
        self._bytes = 0
        self._timer_set = False

    def add(self, line: dict) -> None:
        """Queue `line`."""
        with self._lock:
            self._lines.append(line)
            self._bytes += len(line.get("message") or "") + _LINE_FIELDS_BYTES
            full = len(self._lines) >= MAX_LINES or self._bytes >= MAX_BYTES
            set_timer = not full and not self._timer_set
            self._timer_set = self._timer_set or set_timer
        if full:
            self.flush()
        elif set_timer:
            loop = self._worker.loop
            loop.add_callback(loop.call_later, INTERVAL, self._flush_on_timer)

    def _flush_on_timer(self) -> None:
        with self._lock:
            self._timer_set = False
        self.flush()

    def flush(self) -> None:
        """Send the queued lines now, as one event."""
        with self._lock:
            lines, self._lines, self._bytes = self._lines, [], 0
            if not lines:
                return
            try:
                # Under the lock, so batches leave in the order their lines were added.
                self._worker.log_event(LOG_TOPIC, msgpack.packb(lines, use_bin_type=True))
            except CommClosedError:
                pass  # the worker is closing: its runs' results cannot reach the driver either


_BATCHES: weakref.WeakKeyDictionary[Any, LineBatches] = weakref.WeakKeyDictionary()
_BATCHES_LOCK = threading.Lock()


def batches_of(worker: Any) -> LineBatches:
    """The batches of this worker (one per worker, however many threads log)."""
    with _BATCHES_LOCK:
        batches = _BATCHES.get(worker)
        if batches is None:
            batches = _BATCHES[worker] = LineBatches(worker)
        return batches


def receive(on_log: Callable[[dict], None]) -> Callable[[tuple[float, Any]], None]:
    """The driver's handler for `LOG_TOPIC` events: each line of a batch to `on_log`, in order."""

    def handle(event: tuple[float, Any]) -> None:
        payload = event[1]
        if isinstance(payload, bytes):
            for line in msgpack.unpackb(payload, raw=False):
                on_log(line)
        else:
            on_log(payload)

    return handle


class ComputeFailedFilter(logging.Filter):
    """Drops distributed's "Compute Failed" worker log of dagrun's task calls: dagrun reports
    each failure itself, once, with the user's traceback (see `dagrun.tracebacks`), and the
    workers of the local cluster dagrun starts print on the driver's terminal."""

    _ENTRY_POINTS = re.compile(r"\b(run_on_worker|run_on_worker_with_kwargs|run_after|load_on_worker)\b")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Compute Failed") or not isinstance(record.args, tuple):
            return True
        return not any(self._ENTRY_POINTS.search(str(arg)) for arg in record.args[:3])


def silence_compute_failed() -> None:
    """Filter distributed's worker logger in this process (idempotent)."""
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(existing, ComputeFailedFilter) for existing in logger.filters):
        logger.addFilter(ComputeFailedFilter())
