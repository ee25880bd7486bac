"""What the Dask executor runs on workers: the task entry points and concurrency-limit slots.

Dask pickles these functions by reference (module and name), so they live here, in a module
every worker can import without the driver's session, cluster or history code. Log lines
travel back to the driver in batches, as Dask events on the `LOG_TOPIC` topic (`dask_logs`),
and task events (start, attempts, end) on a topic of their own (`dask_events`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import distributed

from dagrun.errors import TaskExitError
from dagrun.executors.dask_events import send_event
from dagrun.executors.dask_logs import batches_of, send_line, silence_compute_failed
from dagrun.logs import get_run_logger
from dagrun.runner import SharedSpec, load_result, run_task
from dagrun.secrets import mask_record
from dagrun.task_events import TaskEvent

REPORT_WAIT = 0.01  # seconds a task waits at most for its worker's queued messages to go out
_QUEUE_TURNS = 50  # loop turns a task's report may take to be queued after its thread returned
# Per worker's batched stream: how many of its messages are known to be written (see
# `_reports_sent`); weak, so a closed worker's stream is not kept.
_WRITTEN: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def dask_setup(worker: Any) -> None:
    """Preload hook for the worker processes of a LocalCluster dagrun starts (see
    `dask_clusters.managed_cluster_kwargs`): they ignore SIGINT.

    They are the driver's children, in its process group, so a terminal's Ctrl-C reaches them
    too. The driver handles it: it cancels the run, then closes the cluster. A worker dying of
    it mid-task instead prints a traceback and races its nanny's restart against that close.
    Their "Compute Failed" log of dagrun's tasks is silenced: the driver reports each failure.
    Their output is written a whole line at a time: the workers share the driver's terminal,
    and two tasks printing at once on two workers must not splice their lines together.
    """
    silence_compute_failed()
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _forward_log(line: dict) -> None:
    """Worker-side log sink: mask secrets, then queue the line for the driver (see
    `dask_logs`): the scheduler keeps recent events, and Dask's dashboard shows them."""
    line = mask_record(line)
    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker (e.g. a local client.run); print where we are
        print(line["message"])
        return
    send_line(worker, line)


def _forward_event(event: TaskEvent) -> None:
    """Worker-side event sink: queue the record for the driver (see `dask_events`)."""
    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker: nobody to report to
        return
    send_event(worker, event)


def _reports_sent(wait: float = REPORT_WAIT) -> None:
    """Let the worker send what it has queued for the scheduler (the previous task's
    `task-finished`, batched for up to 2 ms) before user code that may end the process runs:
    the scheduler then knows that task finished, and blames a death on the one that ran after
    it (`dask_deaths.Death`), not on a task that only waited there.

    Usually that was done already: each task, as it ends, has its own report sent as soon as
    the worker queues it (`_send_ahead`), so the next task starts without waiting. Otherwise
    the queue is sent at once (not at the end of Dask's batching interval, which cost a
    short task on a one-thread worker up to 2 ms) and this waits for the write."""
    try:
        worker = distributed.get_worker()
        stream = worker.batched_stream
    except (ValueError, AttributeError):
        return
    if _WRITTEN.get(stream, 0) >= stream.message_count:
        return  # everything queued before this task has been written
    if not stream.buffer and stream.next_deadline is None:
        return  # its sender is idle: the same
    written = threading.Event()
    worker.loop.add_callback(_send_queued, stream, time.monotonic() + wait, written)
    written.wait(wait)


def _send_ahead(wait: float = REPORT_WAIT) -> None:
    """Called by a task's thread as it ends: have its report sent once the worker queues it."""
    try:
        worker = distributed.get_worker()
        stream = worker.batched_stream
    except (ValueError, AttributeError):
        return
    worker.loop.add_callback(_send_when_queued, stream, stream.message_count, time.monotonic() + wait)


async def _send_when_queued(stream: Any, count: int, deadline: float) -> None:
    """On the worker's loop: once a message beyond the first `count` is queued (the ended
    task's report, a few turns after its thread returned), send the queue at once."""
    for _ in range(_QUEUE_TURNS):
        if stream.message_count > count:
            await _send_queued(stream, deadline)
            return
        await asyncio.sleep(0)


async def _send_queued(stream: Any, deadline: float, written: threading.Event | None = None) -> None:
    """On the worker's loop: have `stream` (a `BatchedSend`) write its queue now; once the
    write has reached the socket, note how many messages are written and set `written`."""
    try:
        turns = 0
        while stream.buffer and time.monotonic() < deadline:
            stream.next_deadline = None  # no batching interval for this send
            stream.waker.set()
            turns += 1  # its sender takes the queue within a turn or two, unless mid-write
            await asyncio.sleep(0 if turns < 8 else 0.0005)
        if stream.buffer:
            return
        taken = stream.message_count  # every message counted so far has left the queue
        # The batch is written by a coroutine the loop starts a turn after taking it.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        _WRITTEN[stream] = max(_WRITTEN.get(stream, 0), taken)
    finally:
        if written is not None:
            written.set()


def _run(spec: SharedSpec, task_run_id: str, index: int, args: tuple, kwargs: dict, cache_key: str | None) -> Any:
    """Run the task; a `SystemExit` or `KeyboardInterrupt` from it fails the task run instead
    of the worker (Dask lets both through its task thread, and the worker process ends)."""
    _reports_sent()
    try:
        return run_task(spec.load(), task_run_id, index, args, kwargs, _forward_log, cache_key, _forward_event)
    except (SystemExit, KeyboardInterrupt) as exit_request:
        description = type(exit_request).__name__ + (f": {exit_request}" if str(exit_request) else "")
        raise TaskExitError(description).with_traceback(exit_request.__traceback__) from None
    finally:
        try:
            batches_of(distributed.get_worker()).flush()  # the run's last lines before its result
        except ValueError:
            pass
        _send_ahead()


# Three entry points, so the common call ships only what it uses (fewer graph nodes per task).
def run_on_worker(spec: SharedSpec, task_run_id: str, index: int, cache_key: str | None, *args: Any) -> Any:
    return _run(spec, task_run_id, index, args, {}, cache_key)


def run_on_worker_with_kwargs(
    spec: SharedSpec, task_run_id: str, index: int, cache_key: str | None, kwargs: dict, *args: Any
) -> Any:
    return _run(spec, task_run_id, index, args, kwargs, cache_key)


def run_after(
    spec: SharedSpec, task_run_id: str, index: int, cache_key: str | None, kwargs: dict, _markers: list, *args: Any
) -> Any:
    return _run(spec, task_run_id, index, args, kwargs, cache_key)


def load_on_worker(spec: SharedSpec, cache_key: str) -> Any:
    return load_result(spec.load(), cache_key)


def ordering_marker(_upstream: Any) -> None:
    """Runs next to an upstream result and returns nothing: `wait_for` without data movement."""


@dataclasses.dataclass(frozen=True, slots=True)
class TagSlots:
    """The concurrency-limit slots one task run holds on a worker: a lease of the cluster-wide
    `distributed.Semaphore` of each (tag, limit), taken in tag order so that two runs wanting
    the same tags never each hold one and wait for the other. Calling it gives the context
    manager `run_task` holds around the run's attempts; leases are released on exit, also on
    exceptions (a dead worker's leases expire after `distributed.scheduler.locks.lease-timeout`).
    """

    limits: tuple[tuple[str, int], ...]

    @contextmanager
    def __call__(self) -> Iterator[None]:
        held: list[distributed.Semaphore] = []
        try:
            for tag, limit in self.limits:
                semaphore = distributed.Semaphore(max_leases=limit, name=semaphore_name(tag, limit))
                _acquire(semaphore, tag, limit)
                held.append(semaphore)
            yield
        finally:
            for semaphore in reversed(held):
                semaphore.release()  # never raises; a failed release expires with its lease


def semaphore_name(tag: str, limit: int) -> str:
    """The scheduler-wide semaphore of a tag. The limit is part of the name because Dask
    refuses a semaphore registered again with another size: after `dagrun concurrency set`
    changes a limit, runs already going keep the old semaphore and new runs use the new one."""
    return f"dagrun-tag-{tag}-limit-{limit}"


def _acquire(semaphore: distributed.Semaphore, tag: str, limit: int) -> None:
    """Take a lease; while waiting for one, leave the worker's thread pool, so a waiting run
    does not occupy a thread that other tasks could run on."""
    if semaphore.acquire(timeout=0):
        return
    runs = "run" if limit == 1 else "runs"
    get_run_logger().info(f"Waiting for a concurrency slot of tag '{tag}' (at most {limit} {runs} at once)")
    distributed.secede()
    try:
        semaphore.acquire()
    finally:
        distributed.rejoin()
