"""The driver's end of the task-event channel: batches from workers, on the driver's clock.

Workers stamp records with their own wall clock, which may be minutes off the driver's. The
first time a worker's batch arrives, the receiver measures that worker's offset once: it asks
for the worker's clock (`client.run(worker_clock)`) and compares the answer with the midpoint
of the driver's clock before and after the round trip. Until the answer is in, that worker's
batches wait (in order); every record is then converted (`task_events.decode`), so a skewed
cluster clock never puts a task before its flow run started. An offset within half the round
trip is below what the measurement can tell, and is taken as zero.

At the end of a run, `drain` asks every worker to send what it holds, followed by a marker,
and waits for the markers: records from one worker arrive in order, so after its marker
nothing of the run is still on its way.

Everything here runs on the client's event loop, except `drain` (the caller's thread).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from dagrun.executors.dask_events import MARKER, drain, worker_clock
from dagrun.task_events import TaskEvent, decode

MEASURE_TIMEOUT = 10.0  # seconds to wait for a worker's clock before taking it as the driver's


class EventReceiver:
    """The `subscribe_topic` handler of `EVENT_TOPIC`: decoded records, per batch, to `deliver`."""

    def __init__(self, client: Any, deliver: Callable[[Sequence[TaskEvent]], None] | None) -> None:
        self._client = client
        self._deliver = deliver or _ignore
        self._offsets: dict[str, float] = {}  # worker address -> its clock minus the driver's
        self._waiting: dict[str, list[list]] = {}  # worker -> batches that arrived before its offset
        self._markers = threading.Condition()
        self._awaited: dict[str, set[str]] = {}  # drain token -> workers whose marker arrived

    def __call__(self, event: tuple[float, Any]) -> None:
        worker, items = msgpack.unpackb(event[1], raw=False)
        if worker in self._offsets:
            self._handle(worker, items)
        elif worker in self._waiting:
            self._waiting[worker].append(items)
        else:
            self._waiting[worker] = [items]
            asyncio.ensure_future(self._measure(worker))

    async def _measure(self, worker: str) -> None:
        offset = 0.0
        try:
            before = time.time()
            answers = await self._client.run(
                worker_clock, workers=[worker], asynchronous=True, callback_timeout=MEASURE_TIMEOUT
            )
            after = time.time()
            offset = answers[worker] - (before + after) / 2
            if abs(offset) <= (after - before) / 2:
                offset = 0.0
        except Exception:  # noqa: BLE001 - the worker left: its records keep their own clock
            pass
        self._offsets[worker] = offset
        for items in self._waiting.pop(worker, ()):
            self._handle(worker, items)

    def _handle(self, worker: str, items: list[list]) -> None:
        offset = self._offsets[worker]
        events = []
        for item in items:
            if item[0] == MARKER:
                self._marked(item[1], worker)
            else:
                events.append(decode(item, worker, offset))
        if events:
            self._deliver(events)

    def _marked(self, token: str, worker: str) -> None:
        with self._markers:
            seen = self._awaited.get(token)
            if seen is not None:  # else another driver's drain
                seen.add(worker)
                self._markers.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until every worker's records sent before now have been delivered; False when
        some worker's did not arrive within `timeout` seconds."""
        token = uuid.uuid4().hex
        with self._markers:
            self._awaited[token] = set()
        try:
            deadline = time.monotonic() + timeout
            answers = self._client.run(drain, token=token, on_error="return", callback_timeout=timeout)
            workers = {worker for worker, answer in answers.items() if not isinstance(answer, BaseException)}
            with self._markers:
                return self._markers.wait_for(
                    lambda: workers <= self._awaited[token], max(0.0, deadline - time.monotonic())
                )
        finally:
            with self._markers:
                self._awaited.pop(token, None)


def _ignore(events: Sequence[TaskEvent]) -> None:
    return None
