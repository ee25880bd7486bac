"""Ending a flow run at its `timeout_seconds`, wherever its body is, as Prefect does.

A flow body is the user's code running in the driver: at the deadline it is interrupted, so
the line after a `time.sleep(5)` in a flow with `timeout_seconds=1` never runs, and the engine
cancels the run's tasks and records it `Failed` with a `FlowTimeoutError`.

| where the body is        | how it is interrupted at the deadline                              |
|--------------------------|--------------------------------------------------------------------|
| main thread, sync body   | SIGALRM (`setitimer`): a `time.sleep` or blocking call ends too     |
| another thread           | an exception injected into it (`PyThreadState_SetAsyncExc`), at    |
|                          | its next Python instruction (a blocking call returns first)        |
| async body               | the thread waiting for it is interrupted as above, and the body's  |
|                          | tasks are cancelled at their next `await`                          |
| in dagrun's code (a task | not there: dagrun's waits end at the deadline by themselves and    |
| call, a wait)            | raise; the interrupt is tried again every 50 ms until the body is  |
|                          | back in its own code                                               |

A SIGALRM handler and timer set before the run (pytest-timeout's, a program's own) are kept:
their alarm is passed on when it comes, and both are restored when the body ends.

The interrupt is a BaseException (`_Interrupt`), so an `except Exception:` in the body does not
swallow it; where the body was called (`run_interruptibly`) it becomes `FlowTimeoutError`.
Deadlines nest: a subflow run ends at its own deadline or at its parent's, whichever comes
first, and the error names the run whose time is up (the outermost one), so each enclosing
run knows whether the timeout is its own.

A body that installs a SIGALRM handler of its own takes the run's alarm away (as in Prefect).
Off the main thread, or where `setitimer` is missing (Windows), the thread way above is used.
"""

from __future__ import annotations

import contextvars
import ctypes
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

from dagrun.async_support import call_flow_body
from dagrun.errors import FlowTimeoutError

T = TypeVar("T")

RETRY_SECONDS = 0.05  # how soon an interrupt deferred out of dagrun's own code is tried again
_BODY_CALLERS = frozenset({call_flow_body.__code__})  # the dagrun frame right above user code
_active: contextvars.ContextVar[RunTimeout | None] = contextvars.ContextVar("dagrun_flow_timeout", default=None)


class _Interrupt(BaseException):
    """Raised in a flow body at its deadline; `run_interruptibly` turns it into FlowTimeoutError."""


@dataclass(frozen=True, slots=True)
class RunTimeout:
    """The deadline of one flow run (None: it has no timeout of its own) and its parent's.

    | attribute / method | meaning                                                          |
    |--------------------|------------------------------------------------------------------|
    | `earliest`         | the first deadline of this run or an enclosing one (monotonic)   |
    | `expired()`        | the outermost run whose deadline has passed, or None              |
    | `check()`          | raises that run's `FlowTimeoutError`                              |
    """

    flow_run_name: str
    seconds: float | None
    deadline: float | None
    parent: RunTimeout | None = None
    earliest: float | None = field(init=False)  # asked at every wait: computed once

    def __post_init__(self) -> None:
        deadlines = [run.deadline for run in self._chain() if run.deadline is not None]
        object.__setattr__(self, "earliest", min(deadlines) if deadlines else None)

    @classmethod
    def start(cls, flow_run_name: str, seconds: float | None, parent: RunTimeout | None) -> RunTimeout:
        """The timeout of a run starting now."""
        deadline = None if seconds is None else time.monotonic() + seconds
        return cls(flow_run_name, seconds, deadline, parent)

    def expired(self) -> RunTimeout | None:
        now = time.monotonic()
        return next((run for run in self._chain() if run.deadline is not None and run.deadline <= now), None)

    def check(self) -> None:
        if self.earliest is None or time.monotonic() < self.earliest:
            return  # the common case, at every wait: nothing due
        ended = self.expired()
        if ended is not None:
            raise ended.error()

    def error(self) -> FlowTimeoutError:
        # Prefect's message is "Flow run exceeded timeout of 1 second(s)"; this one names the run.
        return FlowTimeoutError(
            f"Flow run '{self.flow_run_name}' exceeded its timeout_seconds: timeout of {self.seconds} second(s)"
        )

    def _chain(self) -> list[RunTimeout]:
        """The outermost run first."""
        chain, run = [], self
        while run is not None:
            chain.append(run)
            run = run.parent
        return chain[::-1]


def run_interruptibly(timeout: RunTimeout, call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` (the flow body, via `call_flow_body`), interrupted at `timeout.earliest`
    with the `FlowTimeoutError` of the run whose time is up.

    The interrupt may arrive anywhere up to the end of `stop()`, cleanup included: whatever
    catches it here stops the interrupter again (`stop` may be called twice)."""
    if timeout.earliest is None:
        return call(*args)
    enclosing = _active.get()
    interrupter = _Alarm(timeout) if _alarm_usable() else _Watcher(timeout)
    try:
        try:
            _active.set(timeout)
            interrupter.start()
            return call(*args)
        finally:
            _active.set(enclosing)  # first: an alarm from now on is not this run's
            interrupter.stop()
    except _Interrupt:
        _active.set(enclosing)
        interrupter.stop()
        raise (timeout.expired() or timeout).error() from None


def _in_flow_body(frame: FrameType | None) -> bool:
    """Whether `frame` is the flow body's own code (not dagrun's, which it may have called)."""
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        if module == "dagrun" or module.startswith("dagrun."):
            return frame.f_code in _BODY_CALLERS
        frame = frame.f_back
    return False


# ---------------------------------------------------------------- the main thread: SIGALRM
def _alarm_usable() -> bool:
    handler = signal.getsignal(signal.SIGALRM)
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and handler is not None  # set outside Python: it could not be restored
    )


def _arm(delay: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, max(delay, 0.001))


class _Alarm:
    """SIGALRM at the deadline.

    The outermost run's alarm installs its handler; a subflow's re-arms it for the subflow's
    deadline and, when it ends, for the enclosing run's. A handler and timer that were there
    before (pytest-timeout's, a program's own) are kept: their alarm is passed on when it
    comes, and both are restored at the end."""

    def __init__(self, timeout: RunTimeout) -> None:
        self.timeout = timeout
        self.owner = self  # the alarm whose handler is installed
        self.stopped = False
        self.previous_handler: Any = None
        self.previous_timer: tuple[float, float] = (0.0, 0.0)
        self.their_deadline: float | None = None  # when the previous timer was due

    def start(self) -> None:
        installed = getattr(signal.getsignal(signal.SIGALRM), "__self__", None)
        if isinstance(installed, _Alarm):
            self.owner = installed
        else:
            self.previous_handler = signal.signal(signal.SIGALRM, self.on_alarm)
            self.previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)
            if self.previous_timer[0] > 0:
                self.their_deadline = time.monotonic() + self.previous_timer[0]
        self.owner.rearm()

    def stop(self) -> None:
        """Called once this run is no longer the active one (a late alarm then does nothing)."""
        if self.stopped:
            return
        self.stopped = True
        if self.owner is not self:  # a subflow's: the enclosing run's deadline holds again
            self.owner.rearm()
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous_handler)
        if self.their_deadline is not None:
            remaining = max(self.their_deadline - time.monotonic(), 0.001)
            signal.setitimer(signal.ITIMER_REAL, remaining, self.previous_timer[1])

    def rearm(self) -> None:
        active = _active.get()
        due = [d for d in (self.their_deadline, active.earliest if active else None) if d is not None]
        if due:
            _arm(min(due) - time.monotonic())
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.their_deadline is not None and time.monotonic() >= self.their_deadline:
            interval = self.previous_timer[1]
            self.their_deadline = time.monotonic() + interval if interval > 0 else None
            self.rearm()
            if callable(self.previous_handler):
                self.previous_handler(signum, frame)
        timeout = _active.get()
        if timeout is None or timeout.expired() is None:  # the run is over, or not yet due
            self.rearm()
        elif not _in_flow_body(frame):
            _arm(RETRY_SECONDS)  # in dagrun's code: its waits raise at the deadline themselves
        else:
            raise _Interrupt()


# ---------------------------------------------------------------- other threads: an injected exception
def _inject(thread_id: int, exception: type[BaseException] | None) -> None:
    """Raise `exception` in the thread at its next instruction (None: withdraw a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception is not None else None
    )


class _Watcher:
    """A thread that injects `_Interrupt` into the body's thread at the deadline, once.

    It injects only while holding `lock` and before `done` is set; `stop` sets `done`, then
    takes the lock (an injection under way completes first) and withdraws anything still
    pending, so nothing lands after the body's scope."""

    def __init__(self, timeout: RunTimeout) -> None:
        self.timeout = timeout
        self.target = threading.get_ident()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._watch, name="dagrun-flow-timeout", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        with self.lock:
            _inject(self.target, None)

    def _watch(self) -> None:
        delay = max(self.timeout.earliest - time.monotonic(), 0.0)  # type: ignore[operator]
        while not self.done.wait(delay):
            delay = RETRY_SECONDS
            with self.lock:
                if self.done.is_set():
                    return
                if self.timeout.expired() is not None and _in_flow_body(sys._current_frames().get(self.target)):
                    _inject(self.target, _Interrupt)
                    return
