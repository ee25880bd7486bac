"""Batches of records leaving a Dask worker for the driver, one Dask event per batch.

Worker-side (imported on workers: nothing of the driver). A Dask event costs a thread hop on
the worker, a message through the scheduler and a callback in the driver, so records are not
sent one event each: a worker gathers them and sends a batch when it holds `max_items` records
or `max_bytes` (estimated), when an urgent record arrives, or `interval` seconds after the first
record of a batch, whichever comes first. Log lines (`dask_logs`) and task events
(`dask_events`) each have a topic and limits of their own.

A batch travels as one msgpack-packed `bytes` value (the scheduler keeps the last 1,000 events
of a topic, and one bytes object a batch keeps that small). Batches leave in the order their
records were added, whichever thread flushes: every send goes through the worker loop's
callback queue, under the lock (`log_event` sends at once when called on the loop thread,
which would overtake a batch a task thread had queued).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from distributed.comm.core import CommClosedError


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a topic's batch leaves: the first limit reached."""

    topic: str
    max_items: int
    max_bytes: int  # estimated from what `add` is told; 0: no byte limit
    interval: float  # seconds a record may wait for others


class WorkerBatches:
    """The records a worker has not sent yet on one topic. Thread-safe: task threads add, the
    worker's event loop sends."""

    def __init__(self, worker: Any, limits: BatchLimits, pack: Callable[[Any, list], Any]) -> None:
        self._worker = worker
        self._limits = limits
        self._pack = pack  # (worker, items) -> what the event carries
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._bytes = 0
        self._timer_set = False

    def add(self, item: Any, size: int = 0, urgent: bool = False) -> None:
        """Queue `item` (about `size` bytes packed); `urgent` sends its batch now."""
        limits = self._limits
        with self._lock:
            self._items.append(item)
            self._bytes += size
            full = urgent or len(self._items) >= limits.max_items or 0 < limits.max_bytes <= self._bytes
            set_timer = not full and not self._timer_set
            self._timer_set = self._timer_set or set_timer
        if full:
            self.flush()
        elif set_timer:
            loop = self._worker.loop
            loop.add_callback(loop.call_later, limits.interval, self._flush_on_timer)

    def _flush_on_timer(self) -> None:
        with self._lock:
            self._timer_set = False
        self.flush()

    def flush(self, last: Any = None) -> None:
        """Send the queued records now, as one event (`last` appended after them, if given)."""
        with self._lock:
            items, self._items, self._bytes = self._items, [], 0
            if last is not None:
                items.append(last)
            if not items:
                return
            payload = msgpack.packb(self._pack(self._worker, items), use_bin_type=True)
            self._worker.loop.add_callback(self._send, payload)

    def _send(self, payload: bytes) -> None:
        try:
            self._worker.log_event(self._limits.topic, payload)
        except CommClosedError:
            pass  # the worker is closing: its runs' results cannot reach the driver either


_BATCHES: weakref.WeakKeyDictionary[Any, dict[str, WorkerBatches]] = weakref.WeakKeyDictionary()
_BATCHES_LOCK = threading.Lock()


def worker_batches(worker: Any, limits: BatchLimits, pack: Callable[[Any, list], Any]) -> WorkerBatches:
    """The batches of `worker` on `limits.topic` (one per worker and topic, however many
    threads add to them)."""
    with _BATCHES_LOCK:
        topics = _BATCHES.setdefault(worker, {})
        batches = topics.get(limits.topic)
        if batches is None:
            batches = topics[limits.topic] = WorkerBatches(worker, limits, pack)
        return batches
