"""`async def` tasks and flows.

| what                                   | what happens                                                  |
|----------------------------------------|---------------------------------------------------------------|
| `my_async_flow(...)`                   | a coroutine: `asyncio.run(my_async_flow())` runs the flow     |
| the body of an async flow              | runs on an event loop of its own, in a thread of the driver   |
| an async task called in a running flow | submitted at once; its `TaskFuture` is awaitable              |
| an async task called outside a flow    | a coroutine (as in Prefect): awaiting it runs the task here   |
| an async task on a worker              | runs on the worker process's task event loop (see below)      |

The task event loop: each process (a Dask worker, or the driver for in-process runs) runs
its async tasks on one event loop of dagrun's, in a thread of its own, as Prefect runs a
flow's async tasks on one loop: tasks that await run at once, their prints do not interleave
mid-line, and a timeout cancels the coroutine itself (it stops, unlike a timed-out sync
task's thread). It is not the loop of Dask's worker: that loop carries the worker's
heartbeats and data transfers, and a coroutine that blocks for a moment (a sync call inside
`async def` is common) would stall it and get the worker declared dead. The Dask task thread
that waits for the coroutine leaves the worker's thread pool meanwhile (`distributed.secede`),
so waiting async tasks do not hold threads that other tasks need.

The flow body gets a thread and loop of its own because the engine around it blocks (it
starts the cluster, waits for tasks); the calling loop (the user's `asyncio.run`) waits for
the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from dagrun.errors import TaskTimeoutError

_POLL_FIRST, _POLL_MAX = 0.002, 0.05  # seconds between checks of an awaited future
_WAIT_EVERY = 0.5  # seconds between fuller checks of it (see `future_value`)
_loop_lock = threading.Lock()
_task_loop: asyncio.AbstractEventLoop | None = None


def is_async(fn: Any) -> bool:
    """Whether `fn` is an `async def` function (its calls return coroutines)."""
    return inspect.iscoroutinefunction(fn)


# ---------------------------------------------------------------- tasks
def sync_callable(fn: Callable[..., Any], timeout: float | None) -> Callable[..., Any]:
    """A plain function running the `async def` task function `fn` to its value on the task
    event loop; with a timeout, an attempt over it is cancelled and fails with
    `TaskTimeoutError`, as a sync task's attempt does."""

    async def attempt(*args: Any, **kwargs: Any) -> Any:
        if timeout is None:
            return await fn(*args, **kwargs)
        started = time.monotonic()
        try:
            return await asyncio.wait_for(fn(*args, **kwargs), timeout)
        except asyncio.TimeoutError:
            if time.monotonic() - started < timeout:
                raise  # the task's own timeout error, not ours
            raise TaskTimeoutError(f"attempt exceeded timeout_seconds={timeout}") from None

    def call(*args: Any, **kwargs: Any) -> Any:
        with _outside_worker_thread_pool():
            return run_on_task_loop(attempt(*args, **kwargs))

    return call


def run_on_task_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run `coroutine` on the task event loop, in this thread's context (the task run's),
    and wait for its value; if the wait is interrupted (Ctrl-C), the coroutine is cancelled."""
    loop = _shared_task_loop()
    context = contextvars.copy_context()
    outcome: concurrent.futures.Future = concurrent.futures.Future()
    started: list[asyncio.Task] = []

    def start() -> None:
        task = context.run(loop.create_task, coroutine)  # the task runs in a copy of `context`
        started.append(task)
        task.add_done_callback(lambda done: _settle(outcome, done))

    loop.call_soon_threadsafe(start)
    try:
        return outcome.result()
    except BaseException:
        if not outcome.done():
            loop.call_soon_threadsafe(lambda: started and started[0].cancel())
        raise


def _settle(outcome: concurrent.futures.Future, task: asyncio.Task) -> None:
    if task.cancelled():
        outcome.set_exception(asyncio.CancelledError())
    elif task.exception() is not None:
        outcome.set_exception(task.exception())
    else:
        outcome.set_result(task.result())


def _shared_task_loop() -> asyncio.AbstractEventLoop:
    global _task_loop
    with _loop_lock:
        if _task_loop is None or _task_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="dagrun-async-tasks", daemon=True).start()
            _task_loop = loop
        return _task_loop


@contextlib.contextmanager
def _outside_worker_thread_pool() -> Iterator[None]:
    """On a Dask worker, leave the worker's thread pool while the coroutine runs (the
    scheduler then counts the task as long-running)."""
    distributed = sys.modules.get("distributed")  # never imported for it: in-process runs
    if distributed is None:
        yield
        return
    try:
        distributed.get_worker()
    except ValueError:  # not in a worker's task thread
        yield
        return
    distributed.secede()
    try:
        yield
    finally:
        distributed.rejoin()


async def run_elsewhere(fn: Callable[..., Any], *args: Any) -> Any:
    """Await `fn(*args)` run in a helper thread (an async task called outside a flow): the
    calling loop stays free meanwhile."""
    return await asyncio.to_thread(fn, *args)


async def future_value(future: Any) -> Any:
    """What `await future` gives: the task's value, waiting without blocking the loop (so
    futures awaited together, e.g. with `asyncio.gather`, are waited for together)."""
    delay, next_wait = _POLL_FIRST, time.monotonic() + _WAIT_EVERY
    # `.done()` is a cheap local check; `.wait(0)` now and then also moves runs that wait
    # for upstream results along and notices a cancel request or the flow's timeout.
    while not future.done():
        if time.monotonic() >= next_wait:
            future.wait(timeout=0)
            next_wait = time.monotonic() + _WAIT_EVERY
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
    return future.result()


# ---------------------------------------------------------------- flows
async def flow_coroutine(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What calling an async flow returns: awaiting it runs the flow (see the docstring)."""
    with _ctrl_c_raises():
        return run(*args, **kwargs)


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """`asyncio.run` turns the first Ctrl-C into a cancel of its main task at that task's
    next `await`, which a flow run (blocking until it ends) never reaches. While the run
    lasts, Ctrl-C raises KeyboardInterrupt instead, so it cancels the run as for a sync flow."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (None, signal.SIG_IGN, signal.default_int_handler):
        yield  # ignored on purpose (a shell's `&`), set outside Python, or already plain
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def call_flow_body(fn: Callable[..., Any], parameters: dict[str, Any]) -> Any:
    """The flow body's return value; an async body runs on a loop in a thread of its own,
    with this thread's context (the flow run's). Ctrl-C (or the flow's timeout, see
    `dagrun.flow_timeouts`) interrupting the wait here cancels the body's tasks.

    A generator the body returns is consumed into a list, as Prefect does (a run's result must
    be data); a generator flow (`yield` in the body) is left to its caller."""
    value = fn(**parameters)
    # Exact type checks (neither type can be subclassed): `isinstance` would ask a returned
    # direct call's future for its `__class__`, and wait for it before the run settles.
    if type(value) is types.GeneratorType and not inspect.isgeneratorfunction(fn):
        return list(value)
    if type(value) is not types.CoroutineType:
        return value
    context = contextvars.copy_context()
    outcome: list[tuple[bool, Any]] = []
    loop = asyncio.new_event_loop()

    def target() -> None:
        try:
            outcome.append((True, context.run(loop.run_until_complete, value)))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            outcome.append((False, exc))
        finally:
            _close(loop)

    thread = threading.Thread(target=target, name="dagrun-flow-body", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)  # in steps, so that Ctrl-C reaches this thread
    except BaseException:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(_cancel_all, loop)
        thread.join(5)
        raise
    ok, result = outcome[0]
    if ok:
        return result
    raise result


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the body left running, then close its loop (as `asyncio.run` does)."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
