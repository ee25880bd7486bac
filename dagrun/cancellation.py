"""Stopping a flow run from outside its flow body: `dagrun runs cancel` and SIGTERM.

A request never relies on the driver's signal handling (a shell starts `dagrun run ... &`
with SIGINT ignored): it sets a flag on the run's `RunCancellation` and wakes the executor
session, whose waits then return at once. The flow body sees `CancelRequested` at its next
task call or wait, and the engine takes the same path as for Ctrl-C: pending tasks are
cancelled, states become `Cancelled`, the local cluster is stopped.

`request` may be called from a signal handler, which runs between two bytecodes of the main
thread, wherever that thread is, possibly holding a lock. So it takes no lock: it stores the
reason and calls wakers that take none either (the Dask session's wake-up is a
`call_soon_threadsafe`).

    cancellation = RunCancellation()
    cancellation.add_waker(session.interrupt)
    with sigterm_cancels(cancellation):      # SIGTERM -> cancel, then exit 143
        ...                                  # the watcher thread may call request() too
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dagrun.errors import CancelRequested

RUNS_CANCEL_REASON = "Cancelled by `dagrun runs cancel`"
SIGTERM_REASON = "Cancelled by SIGTERM"
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended


class RunCancellation:
    """Whether a top-level flow run (and its subflows) was asked to stop, and why.

    | attribute / method | meaning                                                      |
    |--------------------|--------------------------------------------------------------|
    | `reason`           | None while running; the message of the `Cancelled` state    |
    | `exit_code`        | the driver's exit status once the run is over (SIGTERM: 143) |
    | `request(reason)`  | ask to stop; the first request gives the reason              |
    | `check()`          | raises `CancelRequested` once asked                          |
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.exit_code: int | None = None
        self._wakers: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def add_waker(self, wake: Callable[[], None]) -> None:
        """`wake()` is called on a request (at once if one came already); it must take no lock."""
        self._wakers.append(wake)
        if self.reason is not None:
            wake()

    def request(self, reason: str, exit_code: int | None = None) -> None:
        if exit_code is not None:  # SIGTERM after `runs cancel` still ends the process with it
            self.exit_code = exit_code
        if self.reason is not None:
            return
        self.reason = reason
        for wake in list(self._wakers):
            wake()

    def check(self) -> None:
        if self.reason is not None:
            raise CancelRequested(self.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep up to `seconds` (a flow retry's delay), ending early on a request.

        In short steps rather than on an Event: a signal handler may request, and setting an
        Event takes the lock its waiter may hold."""
        deadline = time.monotonic() + seconds
        while True:
            time.sleep(max(0.0, min(deadline - time.monotonic(), 0.1)))  # sleep(0) yields too
            if self.reason is not None or time.monotonic() >= deadline:
                return


@contextmanager
def sigterm_cancels(cancellation: RunCancellation) -> Iterator[None]:
    """While the block runs, SIGTERM cancels the run rather than killing the driver at once,
    so the run is recorded `Cancelled` and the local cluster is stopped; the caller then
    exits with `cancellation.exit_code` (143). Only from the main thread, and only when
    SIGTERM has its default action: a handler the program installed itself is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        cancellation.request(SIGTERM_REASON, exit_code=SIGTERM_EXIT_CODE)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:  # not one the flow installed meanwhile
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
