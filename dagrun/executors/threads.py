"""A thread executor: task calls run concurrently in the driver's threads, no cluster.

`ThreadExecutor(max_workers=None)` is what Prefect's `ThreadPoolTaskRunner` maps onto. The
semantics are the engine's (retries, cache, logs, history, failure propagation), as on Dask;
only the place differs: a pool of threads in the driver's process.

A call is handed to the pool only once every handle it depends on is done (its upstream
values and its `wait_for=` edges), so no pool thread ever blocks waiting for another call:
a small pool cannot deadlock on a deep graph. Each call runs in a fresh `contextvars`
context, so code in a task sees its own task run, never the flow body's context.
Python cannot stop a running thread: cancelling cancels the calls not yet started, and a
cancelled run's session shuts down without waiting for the calls still running. The pool's
threads are daemon threads (`DaemonThreads`), so such a call does not hold up the process's
exit either (`dagrun run` of a flow that timed out ends then, not when the call would have).
`async def` tasks wait on the process's task event loop (`dagrun.async_support`): a waiting
coroutine uses no CPU, so with the default pool size they do not count against it and run on
threads of their own (Prefect's `ThreadPoolTaskRunner` is unbounded by default: a thread per
call); an explicit `max_workers` bounds sync and async calls together, as in Prefect.
Tag concurrency limits (`dagrun concurrency set TAG N`) are read once per flow run and hold
among that run's threads (a semaphore per limited tag, taken in tag order).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from dagrun.async_support import is_async
from dagrun.concurrency import read_limits

from dagrun.errors import ConfigError
from dagrun.executors.base import CANCELLED, ERROR, FINISHED, PENDING, Executor, ExecutorSession, Submission
from dagrun.executors.local import WORKER_NAME
from dagrun.nested import instances_in
from dagrun.runner import TaskSpec, load_result, result_content_hash, run_task
from dagrun.task_events import TaskEvent

_WAIT_SLICE = 0.1  # seconds: how soon a wait notices `interrupt()` (which may take no lock)


class ThreadHandle(concurrent.futures.Future):
    """The future of one call (its value stays in the driver's memory)."""


def _values_of(value: Any) -> Any:
    """`value` with (finished) handles replaced by their values; raises an upstream's error."""
    kind = type(value)
    if kind is ThreadHandle:
        return value.result(timeout=0)
    if kind in (list, tuple, set, frozenset):
        return kind(_values_of(item) for item in value)
    if kind is dict:
        return {key: _values_of(item) for key, item in value.items()}
    return value


@contextmanager
def _holding(semaphores: list[threading.BoundedSemaphore]) -> Iterator[None]:
    with ExitStack() as stack:
        for semaphore in semaphores:  # in tag order: two runs never each hold what the other waits for
            stack.enter_context(semaphore)
        yield


class DaemonThreads:
    """Up to `max_workers` daemon threads running the calls submitted, in order; a thread is
    added only when none is idle (as `ThreadPoolExecutor` does).

    Not `ThreadPoolExecutor`: the interpreter joins its threads at exit, so a call still running
    after its run was cancelled (Python cannot stop a thread) would keep the process alive for
    as long as the call lasts. A daemon thread ends with the process."""

    def __init__(self, max_workers: int | None) -> None:
        self._max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads done with a call and not yet claimed by a submit
        self._closed = False

    def submit(self, call: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            self._calls.put(call)
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._serve, name=f"dagrun-task_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            call()
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool) -> None:
        """Stop the threads once they are done; without `wait`, calls not started never run."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if not wait:
            try:
                while True:
                    self._calls.get_nowait()
            except queue.Empty:
                pass
        for _ in threads:
            self._calls.put(None)
        if wait:
            for thread in threads:
                thread.join()


class ThreadSession(ExecutorSession):
    address = None

    def __init__(
        self,
        max_workers: int | None,
        on_log: Callable[[dict], None],
        on_events: Callable[[Sequence[TaskEvent]], None] | None = None,
        concurrency_limits: Callable[[], Mapping[str, int]] = read_limits,
    ) -> None:
        self._pool = DaemonThreads(max_workers)
        # Async calls mostly wait: unbounded beside the default pool, in the given one otherwise.
        self._async_pool = self._pool if max_workers else DaemonThreads(sys.maxsize)
        self._on_log = on_log
        self._on_events = on_events
        self._lock = threading.Lock()
        self._interrupted = False
        self._cancelled = False
        self._read_limits = concurrency_limits
        self._semaphores: dict[str, threading.BoundedSemaphore] | None = None  # tag -> slots, read once
        self._specs: dict[int, tuple[TaskSpec, TaskSpec, DaemonThreads]] = {}  # id(spec) -> (spec, with its slots, pool)

    # ---------------------------------------------------------------- starting calls
    def submit_many(self, submissions: Sequence[Submission]) -> list[ThreadHandle]:
        handles = []
        for s in submissions:
            spec, pool = self._placed(s.spec)
            handles.append(self._when_done(self._dependencies(s), self._call, dataclasses.replace(s, spec=spec), pool=pool))
        return handles

    def _placed(self, spec: TaskSpec) -> tuple[TaskSpec, DaemonThreads]:
        """`spec` holding a slot of each limited tag of its task while it runs, and the pool
        its calls run in (decided once per task)."""
        entry = self._specs.get(id(spec))
        if entry is None:
            tags = sorted(getattr(spec.task, "tags", ()) or ())
            if tags and self._semaphores is None:
                self._semaphores = {tag: threading.BoundedSemaphore(n) for tag, n in self._read_limits().items()}
            held = [self._semaphores[tag] for tag in tags if tag in (self._semaphores or {})]
            limited = dataclasses.replace(spec, concurrency_slots=lambda: _holding(held)) if held else spec
            pool = self._async_pool if is_async(spec.task.fn) else self._pool
            entry = self._specs[id(spec)] = (spec, limited, pool)  # holding `spec` pins its id
        return entry[1], entry[2]

    def load(self, spec: TaskSpec, cache_key: str, *, key: str) -> ThreadHandle:
        return self._when_done([], load_result, spec, cache_key)

    def content_hash(self, handle: ThreadHandle, serializer: str | None) -> ThreadHandle:
        return self._when_done([handle], lambda: result_content_hash(handle.result(timeout=0), serializer))

    def _dependencies(self, submission: Submission) -> list[ThreadHandle]:
        found: list[ThreadHandle] = []
        instances_in((submission.args, submission.kwargs, submission.after), ThreadHandle, found)
        return found

    def _call(self, submission: Submission) -> Any:
        _values_of(submission.after)  # a failed wait_for= edge fails the call, as on Dask
        args, kwargs = _values_of(submission.args), _values_of(submission.kwargs)
        return run_task(
            submission.spec, submission.task_run_id, submission.index, args, kwargs, self._on_log,
            submission.cache_key, self._event,
        )

    def _event(self, event: TaskEvent) -> None:
        if self._on_events is not None:  # same process, same clock: only `worker` to fill in
            self._on_events([event._replace(worker=WORKER_NAME)])

    def _when_done(
        self, dependencies: list[ThreadHandle], fn: Callable[..., Any], *args: Any, pool: DaemonThreads | None = None
    ) -> ThreadHandle:
        """A handle for `fn(*args)`, handed to `pool` (the sync pool by default) once every
        dependency is done."""
        handle = ThreadHandle()
        waiting = [len(dependencies) + 1]  # +1 until every callback is attached

        def one_done(_: Any = None) -> None:
            with self._lock:
                waiting[0] -= 1
                ready = waiting[0] == 0
            if ready:
                self._start(handle, fn, args, pool or self._pool)

        for dependency in dependencies:
            dependency.add_done_callback(one_done)
        one_done()
        return handle

    def _start(self, handle: ThreadHandle, fn: Callable[..., Any], args: tuple, pool: DaemonThreads) -> None:
        def work() -> None:
            if not handle.set_running_or_notify_cancel():
                return  # cancelled before it started
            try:
                value = contextvars.Context().run(fn, *args)
            except BaseException as exc:  # noqa: BLE001 - the handle carries it to the engine
                handle.set_exception(exc)
            else:
                handle.set_result(value)

        try:
            pool.submit(work)
        except RuntimeError as exc:  # the pool is shut down: the run is over
            if handle.set_running_or_notify_cancel():
                handle.set_exception(exc)

    # ---------------------------------------------------------------- outcomes
    def status(self, handle: ThreadHandle) -> str:
        if not handle.done():
            return PENDING
        if handle.cancelled():
            return CANCELLED
        return ERROR if handle.exception(timeout=0) is not None else FINISHED

    def wait(self, handles: Sequence[ThreadHandle], timeout: float | None) -> bool:
        return self._wait(handles, timeout, concurrent.futures.ALL_COMPLETED)

    def wait_any(self, handles: Sequence[ThreadHandle], timeout: float | None) -> None:
        self._wait(handles, timeout, concurrent.futures.FIRST_COMPLETED)

    def _wait(self, handles: Sequence[ThreadHandle], timeout: float | None, until: str) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = [handle for handle in handles if not handle.done()]
        while pending and not self._interrupted:
            left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            if left <= 0:
                return False
            done, not_done = concurrent.futures.wait(pending, left, return_when=until)
            if done and until == concurrent.futures.FIRST_COMPLETED:
                return True
            pending = list(not_done)
        return not pending

    def interrupt(self) -> None:
        self._interrupted = True  # a plain store: safe from a signal handler

    def exception(self, handle: ThreadHandle) -> BaseException:
        if handle.cancelled():
            return concurrent.futures.CancelledError("the task run was cancelled")
        error = handle.exception(timeout=0)
        assert error is not None  # the engine asks only for handles with status ERROR
        return error

    def gather(self, handles: Sequence[ThreadHandle]) -> list[Any]:
        return [handle.result() for handle in handles]

    def cancel(self, handles: Iterable[ThreadHandle]) -> None:
        self._cancelled = True
        for handle in handles:
            handle.cancel()  # a call already running finishes in its thread; its value is dropped

    def shutdown(self) -> None:
        # After a cancel (or Ctrl-C), calls still running are not waited for.
        wait = not (self._cancelled or self._interrupted)
        self._pool.shutdown(wait=wait)
        if self._async_pool is not self._pool:
            self._async_pool.shutdown(wait=wait)


class ThreadExecutor(Executor):
    """Run tasks concurrently in a pool of `max_workers` threads of the driver (default:
    Python's `ThreadPoolExecutor` default, min(32, CPUs + 4), for sync tasks; async tasks then
    all run at once, see the module docstring)."""

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (
            not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1
        ):
            raise ConfigError(f"ThreadExecutor(max_workers=...) needs an int >= 1, got {max_workers!r}")
        self.max_workers = max_workers

    def start(
        self, on_log: Callable[[dict], None], on_events: Callable[[Sequence[TaskEvent]], None] | None = None
    ) -> ThreadSession:
        return ThreadSession(self.max_workers, on_log, on_events)

    def __repr__(self) -> str:
        return f"ThreadExecutor(max_workers={self.max_workers})"
