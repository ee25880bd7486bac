"""How task events (`dagrun.task_events`) leave a Dask worker: in batches, on their own topic.

Worker-side (imported on workers: nothing of the driver). A worker gathers the records its
task threads emit and sends them as one Dask event on `EVENT_TOPIC` per `MAX_EVENTS` records or
`INTERVAL` seconds after the first record of a batch, whichever comes first; at once for a
stored result's checksum, which a downstream cache key may be waiting for. So a task that runs
for a second is seen `Running` about `INTERVAL` after it started, while 2,000 short tasks cost
a handful of events, not 4,000.

A batch is one msgpack-packed `[worker address, [record, ...]]` (one bytes value: the scheduler
keeps the last 1,000 events of a topic). Batches leave in the order their records were added,
and a `drain` marker leaves after every record added before it: the driver's receiver
(`dask_event_receiver`) relies on both.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import msgpack
from distributed.comm.core import CommClosedError

from dagrun.task_events import TaskEvent, TaskRunFinished, encode

EVENT_TOPIC = "dagrun-events"
MAX_EVENTS = 128  # ~12 KB a batch
INTERVAL = 0.25  # seconds a record may wait for others before its batch leaves
MARKER = -1  # the tag of a drain marker: `[MARKER, token]`


class EventBatches:
    """The records a worker has not sent yet. Thread-safe: task threads add, the worker's
    event loop sends."""

    def __init__(self, worker: Any) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._items: list[list] = []
        self._timer_set = False

    def add(self, event: TaskEvent) -> None:
        item = encode(event)
        urgent = type(event) is TaskRunFinished and event.checksum is not None
        with self._lock:
            self._items.append(item)
            full = urgent or len(self._items) >= MAX_EVENTS
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

    def flush(self, marker: str | None = None) -> None:
        """Send the queued records now, as one event (followed by a drain `marker`)."""
        with self._lock:
            items, self._items = self._items, []
            if marker is not None:
                items.append([MARKER, marker])
            if not items:
                return
            payload = msgpack.packb([self._worker.address, items], use_bin_type=True)
            # Always through the loop's queue, under the lock: `log_event` sends at once when
            # called on the loop thread, which could overtake a batch a task thread queued.
            self._worker.loop.add_callback(self._send, payload)

    def _send(self, payload: bytes) -> None:
        try:
            self._worker.log_event(EVENT_TOPIC, payload)
        except CommClosedError:
            pass  # the worker is closing: its runs' results cannot reach the driver either


_BATCHES: weakref.WeakKeyDictionary[Any, EventBatches] = weakref.WeakKeyDictionary()
_BATCHES_LOCK = threading.Lock()


def event_batches_of(worker: Any) -> EventBatches:
    """The batches of this worker (one per worker, however many threads report)."""
    with _BATCHES_LOCK:
        batches = _BATCHES.get(worker)
        if batches is None:
            batches = _BATCHES[worker] = EventBatches(worker)
        return batches


def drain(dask_worker: Any, token: str) -> str:
    """Send what this worker holds, then a marker carrying `token` (run with `client.run`)."""
    event_batches_of(dask_worker).flush(marker=token)
    return dask_worker.address


def worker_clock() -> float:
    """This worker's wall clock (run with `client.run`, to measure its offset)."""
    return time.time()
