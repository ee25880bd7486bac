"""How task events (`dagrun.task_events`) leave a Dask worker: in batches, on their own topic.

Worker-side (imported on workers: nothing of the driver). A worker gathers the records its
task threads emit and sends them as one Dask event on `EVENT_TOPIC` per `LIMITS.max_items` records or
`LIMITS.interval` seconds after the first record of a batch, whichever comes first; at once for a
stored result's checksum, which a downstream cache key may be waiting for. So a task that runs
for a second is seen `Running` about `LIMITS.interval` after it started, while 2,000 short tasks cost
a handful of events, not 4,000.

A batch is one msgpack-packed `[worker address, [record, ...]]` (one bytes value: the scheduler
keeps the last 1,000 events of a topic). Batches leave in the order their records were added,
and a `drain` marker leaves after every record added before it: the driver's receiver
(`dask_event_receiver`) relies on both.
"""

from __future__ import annotations

import time
from typing import Any

from dagrun.executors.dask_batches import BatchLimits, WorkerBatches, worker_batches

from dagrun.task_events import TaskEvent, TaskRunFinished, encode

EVENT_TOPIC = "dagrun-events"
# A batch (~12 KB) leaves at 128 records or 0.25 s after its first record.
LIMITS = BatchLimits(EVENT_TOPIC, max_items=128, max_bytes=0, interval=0.25)
MARKER = -1  # the tag of a drain marker: `[MARKER, token]`


def _with_address(worker: Any, items: list) -> list:
    return [worker.address, items]


def event_batches_of(worker: Any) -> WorkerBatches:
    """The event batches of this worker (one per worker, however many threads report)."""
    return worker_batches(worker, LIMITS, _with_address)


def send_event(worker: Any, event: TaskEvent) -> None:
    """Queue one task event for the driver; a stored result's checksum leaves at once."""
    urgent = type(event) is TaskRunFinished and event.checksum is not None
    event_batches_of(worker).add(encode(event), urgent=urgent)


def drain(dask_worker: Any, token: str) -> str:
    """Send what this worker holds, then a marker carrying `token` (run with `client.run`)."""
    event_batches_of(dask_worker).flush(last=[MARKER, token])
    return dask_worker.address


def worker_clock() -> float:
    """This worker's wall clock (run with `client.run`, to measure its offset)."""
    return time.time()
