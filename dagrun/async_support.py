"""`async def` tasks and flows.

| what                                   | what happens                                                  |
|----------------------------------------|---------------------------------------------------------------|
| `my_async_flow(...)`                   | a coroutine: `asyncio.run(my_async_flow())` runs the flow     |
| the body of an async flow              | runs on an event loop of its own, in a thread of the driver   |
| an async task called in a running flow | submitted at once; its `TaskFuture` is awaitable              |
| an async task called outside a flow    | a coroutine (as in Prefect): awaiting it runs the task here   |
| an async task on a worker              | its coroutine runs on an event loop in the executing thread   |

Why an event loop in the executing thread, not the Dask worker's own loop: the worker's loop
carries its heartbeats and data transfers, so a coroutine that blocks for a moment (a sync
call inside `async def`, common in user code) would stall the worker and get it declared
dead; and the task's thread waits for the result either way, since Dask runs tasks in
threads. A loop per call isolates the task, keeps `asyncio.gather` inside the task
concurrent, and lets a timeout cancel the coroutine itself (so it stops, unlike a sync
task's timed-out thread). Async tasks run concurrently with each other on the worker's
threads, as sync tasks do.

The flow body gets a thread of its own because the engine around it blocks (it starts the
cluster, waits for tasks); the calling loop (the user's `asyncio.run`) waits for the run.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from dagrun.errors import TaskTimeoutError

_POLL_FIRST, _POLL_MAX = 0.002, 0.05  # seconds between checks of an awaited future


def is_async(fn: Any) -> bool:
    """Whether `fn` is an `async def` function (its calls return coroutines)."""
    return inspect.iscoroutinefunction(fn)


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run `coroutine` to completion on a new event loop and return its value.

    In a thread that already runs a loop (an async flow's body calling a task that the
    in-process executor runs right there), the loop gets a helper thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_new_loop(coroutine)
    return run_in_thread(_run_on_new_loop, coroutine)


def _run_on_new_loop(coroutine: Coroutine[Any, Any, Any], loops: list | None = None) -> Any:
    loop = asyncio.new_event_loop()
    if loops is not None:
        loops.append(loop)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        try:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def run_in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a helper thread with this thread's context variables; its exception
    is raised here. Ctrl-C here cancels what runs on a loop the helper started (`loops`)."""
    context = contextvars.copy_context()
    outcome: list[tuple[bool, Any]] = []
    loops: list[asyncio.AbstractEventLoop] = []
    takes_loops = fn is _run_on_new_loop

    def target() -> None:
        try:
            extra = (loops,) if takes_loops else ()
            outcome.append((True, context.run(fn, *args, *extra)))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="dagrun-async", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)  # in steps, so that Ctrl-C reaches this thread
    except KeyboardInterrupt:
        for loop in loops:
            loop.call_soon_threadsafe(_cancel_all, loop)
        thread.join(5)
        raise
    ok, value = outcome[0]
    if ok:
        return value
    raise value


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


def call_flow_body(fn: Callable[..., Any], parameters: dict[str, Any]) -> Any:
    """The flow body's return value; an async body runs on a loop in a thread of its own."""
    value = fn(**parameters)
    if not inspect.iscoroutine(value):
        return value
    return run_in_thread(_run_on_new_loop, value)


def sync_callable(fn: Callable[..., Any], timeout: float | None) -> Callable[..., Any]:
    """A plain function running the `async def` task function `fn` to its value (on a loop
    of its own); with a timeout, an attempt over it is cancelled and fails with
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
        return run_coroutine(attempt(*args, **kwargs))

    return call


async def run_elsewhere(fn: Callable[..., Any], *args: Any) -> Any:
    """Await `fn(*args)` run in a helper thread (an async task called outside a flow): the
    calling loop stays free meanwhile."""
    return await asyncio.to_thread(fn, *args)


async def future_value(future: Any) -> Any:
    """What `await future` gives: the task's value, waiting without blocking the loop (so
    futures awaited together, e.g. with `asyncio.gather`, are waited for together)."""
    delay = _POLL_FIRST
    while not future.wait(timeout=0).is_final():
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
    return future.result()


async def flow_coroutine(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What calling an async flow returns: awaiting it runs the flow (see the docstring)."""
    return run(*args, **kwargs)
