"""How log lines travel from Dask workers to the driver: in batches.

Lines are not sent one Dask event each: a worker gathers them (`dask_batches`) and sends a
batch per `LIMITS` (and at once at the end of each task call, so a run's lines reach the driver
before its result does). Task events have a channel of their own (`dask_events`).

A batch travels as one msgpack-packed `bytes` value: the scheduler keeps the last 1,000 events
of a topic (`distributed.admin.low-level-log-length`), and one bytes object per batch keeps
that small (at most 1,000 x ~`LIMITS.max_bytes`) where a list of dicts would cost ~1 KB per line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import msgpack

from dagrun.executors.dask_batches import BatchLimits, WorkerBatches, worker_batches

LOG_TOPIC = "dagrun-logs"
# A batch leaves at 256 lines, ~16 KB packed, or 0.05 s after its first line.
LIMITS = BatchLimits(LOG_TOPIC, max_items=256, max_bytes=16_384, interval=0.05)
_LINE_FIELDS_BYTES = 160  # ids, names, time and level of a line, packed


def _lines(worker: Any, lines: list) -> list:
    return lines


def batches_of(worker: Any) -> WorkerBatches:
    """The line batches of this worker (one per worker, however many threads log)."""
    return worker_batches(worker, LIMITS, _lines)


def send_line(worker: Any, line: dict) -> None:
    """Queue one log line of a task run on `worker` for the driver."""
    batches_of(worker).add(line, size=len(line.get("message") or "") + _LINE_FIELDS_BYTES)


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


class CancelledTaskCloseFilter(logging.Filter):
    """Drops distributed's "Async instruction for <Task cancelled name="execute('KEY')"> ended
    with CancelledError" warning for dagrun's task calls: a worker closed while running a task
    the run cancelled (Ctrl-C, `dagrun runs cancel`, the flow's timeout) logs it, and the
    driver has already reported that cancel, once."""

    _DAGRUN_KEY = re.compile(r"execute\('[^']+-[0-9a-f]{32}(-\d+)?'\)")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith("Async instruction for") or "CancelledError" not in message:
            return True
        return self._DAGRUN_KEY.search(message) is None


def silence_compute_failed() -> None:
    """Filter distributed's worker loggers in this process (idempotent): "Compute Failed" and
    the close of a cancelled task, for dagrun's task calls."""
    for name, kind in (
        ("distributed.worker", ComputeFailedFilter),
        ("distributed.worker.state_machine", CancelledTaskCloseFilter),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, kind) for existing in logger.filters):
            logger.addFilter(kind())
