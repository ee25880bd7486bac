"""`HistoryWriter`: takes history events off the engine's hot path and writes them in batches.

One writer per driver process. `submit` is a bare `SimpleQueue.put` (well under a
microsecond) because the engine calls it for every state change of every task, thousands of
times a second. One daemon thread drains the queue, waits up to `flush_interval` for a batch
to gather (a transaction of hundreds of events costs about as much as one of a single
event), and applies each batch to the `HistoryStore` in one transaction.

The writer also keeps this driver's flow runs alive in the history: from a `FlowRunStarted`
until that run's final `FlowRunState` it writes a `Heartbeat` every `lease_seconds / 3`, so a
run whose driver dies (SIGKILL, power loss) is found `Crashed` once its lease runs out.

The history must never stop a flow: when the database cannot be written (read-only, disk
full, I/O error) the writer logs one warning on the `dagrun.history` logger, counts the
events it could not write in `dropped`, and carries on; later batches are tried again.

    writer = HistoryWriter(HistoryStore.from_env())
    writer.submit(FlowRunStarted(...))     # from the engine, any thread
    writer.flush()                         # e.g. before `dagrun runs show` in the same process
    writer.close()                         # at the end of the driver (also run at exit)
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from dataclasses import dataclass

from dagrun.history.events import (
    FINAL_STATE_NAMES,
    Event,
    FlowRunStarted,
    FlowRunState,
    Heartbeat,
    state_name,
)
from dagrun.history.store import HistoryStore

logger = logging.getLogger("dagrun.history")


@dataclass(frozen=True, slots=True)
class _Control:
    """A marker in the queue: everything before it is written before `done` is set."""

    done: threading.Event
    stop: bool


class HistoryWriter:
    """Batches history events into one write transaction each, on a background thread.

    | method                  | does                                                        |
    |-------------------------|-------------------------------------------------------------|
    | `submit(event)`         | queue an event; never blocks, never raises                  |
    | `flush(timeout=None)`   | wait until every event submitted so far is written           |
    | `close(timeout=None)`   | flush, stop the thread; later submissions are not written    |
    | `dropped`               | how many events could not be written                         |
    """

    def __init__(
        self, store: HistoryStore, *, flush_interval: float = 0.2, max_batch: int = 5000
    ) -> None:
        if flush_interval < 0:
            raise ValueError(f"flush_interval must be >= 0, not {flush_interval!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch!r}")
        self._store = store
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Event | _Control] = queue.SimpleQueue()
        # Set by flush() and close() so the thread stops waiting for a batch to gather.
        self._wake = threading.Event()
        self._warned = False
        self._dropped = 0
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="dagrun-history-writer", daemon=True
        )
        self._thread.start()
        # A script that never closes its writer still gets its last events written.
        atexit.register(self.close)

    def submit(self, event: Event) -> None:
        """Queue `event` for writing. Costs a queue put; safe from any thread."""
        self._queue.put(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event submitted so far is written (or dropped); False on timeout."""
        if self._closed:
            return True
        done = threading.Event()
        self._queue.put(_Control(done, stop=False))
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write what was submitted, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(_Control(threading.Event(), stop=True))
        self._wake.set()
        self._thread.join(timeout)

    @property
    def dropped(self) -> int:
        """How many events were dropped because the database could not be written."""
        return self._dropped

    def _run(self) -> None:
        heartbeats = _HeartbeatSchedule()
        last_write = float("-inf")
        backlog = False
        while True:
            try:
                item: Event | _Control | None = self._queue.get(
                    timeout=heartbeats.seconds_until_due()
                )
            except queue.Empty:
                item = None  # a heartbeat is due
            if item is not None and not isinstance(item, _Control) and not backlog:
                delay = last_write + self._flush_interval - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
            self._wake.clear()
            batch, control = self._drain(item)
            # A full batch means more is waiting: write the next at once, do not gather.
            backlog = len(batch) >= self._max_batch
            try:
                heartbeats.track(batch)
                batch.extend(heartbeats.due())
                if batch:
                    self._store.apply(batch)
                    last_write = time.monotonic()
            except Exception as exc:
                # Whatever went wrong, the thread lives on: flush() and close() wait on it.
                self._drop(batch, exc)
            finally:
                if control is not None:
                    control.done.set()
            if control is not None and control.stop:
                return

    def _drain(self, item: Event | _Control | None) -> tuple[list[Event], _Control | None]:
        """The events queued up to the first control marker, at most `max_batch` of them."""
        batch: list[Event] = []
        while item is not None:
            if isinstance(item, _Control):
                return batch, item
            batch.append(item)
            if len(batch) >= self._max_batch:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batch, None

    def _drop(self, batch: list[Event], exc: Exception) -> None:
        """Count the batch as lost; warn the first time only, a warning per batch is noise."""
        self._dropped += len(batch)
        if not self._warned:
            self._warned = True
            logger.warning(
                "Run history is not being recorded: writing to %s failed (%s: %s). "
                "The flow keeps running; history events that cannot be written are dropped.",
                self._store.describe(),
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug("Dropped %d history events: %s", len(batch), exc)


class _HeartbeatSchedule:
    """The flow runs this driver keeps alive, and when each next needs a heartbeat."""

    def __init__(self) -> None:
        # flow_run_id -> (monotonic time the next heartbeat is due, interval)
        self._due: dict[str, tuple[float, float]] = {}

    def track(self, events: list[Event]) -> None:
        """Start the runs `events` start; stop those they finish."""
        for event in events:
            if isinstance(event, FlowRunStarted):
                # Three heartbeats per lease: one late or lost write does not crash the run.
                interval = max(float(event.lease_seconds) / 3, 0.01)
                self._due[event.flow_run_id] = (time.monotonic() + interval, interval)
            elif isinstance(event, FlowRunState) and _is_final(event.state):
                self._due.pop(event.flow_run_id, None)

    def seconds_until_due(self) -> float | None:
        """How long until the next heartbeat is due; None when no run is active."""
        if not self._due:
            return None
        return max(0.0, min(due for due, _ in self._due.values()) - time.monotonic())

    def due(self) -> list[Heartbeat]:
        """Heartbeats for the runs whose turn it is, rescheduling them."""
        now, wall_clock = time.monotonic(), time.time()
        beats = []
        for flow_run_id, (due, interval) in self._due.items():
            if due <= now:
                beats.append(Heartbeat(flow_run_id, wall_clock))
                self._due[flow_run_id] = (now + interval, interval)
        return beats


def _is_final(state: str) -> bool:
    return state_name(state) in FINAL_STATE_NAMES
