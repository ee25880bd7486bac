"""The executor seam: what the engine needs from anything that runs task calls.

An `Executor` is a reusable description ("a local cluster", "the scheduler at this address");
`start()` turns it into an `ExecutorSession` for one top-level flow run, and the session is
shut down when the run ends. Handles returned by `submit` are the executor's own futures and
are passed back as arguments to later `submit` calls, so data moves between workers without
passing through the driver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dagrun.runner import TaskSpec
from dagrun.task_events import TaskEvent

Handle = Any
"""An executor's future for one submitted call."""

FINISHED, ERROR, CANCELLED, PENDING = "finished", "error", "cancelled", "pending"


@dataclass(frozen=True, slots=True)
class Submission:
    """One task call ready for an executor."""

    spec: TaskSpec
    task_run_id: str
    index: int
    args: tuple
    kwargs: dict
    key: str
    resources: dict[str, float] | None
    after: list[Handle]
    cache_key: str | None = None  # set for a cache miss: the worker also writes the result


class ExecutorSession(ABC):
    """A started executor, able to run task calls until `shutdown()`."""

    #: The scheduler address for the run record and messages (None when in-process).
    address: str | None = None

    @abstractmethod
    def submit_many(self, submissions: Sequence[Submission]) -> list[Handle]:
        """Start calls whose arguments hold upstream handles standing for their values.

        One call per submission, sent together where the executor can (one scheduler
        message for a whole `map`). A submission's `after` handles must finish first without
        their data being passed (the `wait_for=` edges); if one fails, the call fails too.
        """

    @abstractmethod
    def load(self, spec: TaskSpec, cache_key: str, *, key: str) -> Handle:
        """A handle whose value is a cached result, read from the store where it is needed."""

    @abstractmethod
    def content_hash(self, handle: Handle, serializer: str | None) -> Handle:
        """A handle whose value is the content hash of `handle`'s value, computed where it lives."""

    @abstractmethod
    def status(self, handle: Handle) -> str:
        """One of FINISHED, ERROR, CANCELLED, PENDING; cheap, no network round trip."""

    @abstractmethod
    def wait(self, handles: Sequence[Handle], timeout: float | None) -> bool:
        """Block until every handle is done; False if `timeout` expired first."""

    @abstractmethod
    def wait_any(self, handles: Sequence[Handle], timeout: float | None) -> None:
        """Block until at least one handle is done or `timeout` expires."""

    def interrupt(self) -> None:
        """Make every wait, in progress or to come, return at once as if it timed out (the
        run is being cancelled). Callable from any thread and from a signal handler: it must
        take no lock. An executor that runs tasks in the caller's thread has nothing to wake."""

    @abstractmethod
    def exception(self, handle: Handle) -> BaseException:
        """The exception of a handle whose status is ERROR."""

    @abstractmethod
    def gather(self, handles: Sequence[Handle]) -> list[Any]:
        """The values of finished handles, fetched together."""

    def fetch_batch(self, handles: Sequence[Handle], max_bytes: int) -> dict[int, tuple[Any, int]]:
        """Values of finished `handles` in one round trip, for results fetched ahead.

        `handles[0]` is the one asked for and is always included; the others follow, in order,
        while their total size (as the executor knows it) stays within `max_bytes`. Returns
        position -> (value, size in bytes). Best effort: a position may be missing (the caller
        then fetches it its usual way) and no neighbour's error is ever raised. Executors whose
        values are already in the driver fetch nothing ahead."""
        return {}

    @abstractmethod
    def cancel(self, handles: Iterable[Handle]) -> None:
        """Cancel handles that have not finished."""

    def flush_events(self) -> None:
        """Return once the task events of every call that finished have reached `on_events`
        (events travel in batches; the end of a run must not leave some on the way)."""

    def is_infrastructure_error(self, exception: BaseException) -> bool:
        """True when the failure came from the infrastructure, not from user code."""
        return False

    def describe_infrastructure_error(self, exception: BaseException) -> str:
        """One line saying what failed under a task (e.g. why its worker died)."""
        return f"{type(exception).__name__}: {exception}"

    def was_running(self, exception: BaseException) -> bool:
        """False when an infrastructure failure hit the task only while it waited its turn
        (its worker died running others), so the lost attempt was never started."""
        return True

    def scheduler_lost(self, exception: BaseException) -> bool:
        """True when `exception` means the connection to the scheduler was lost."""
        return False

    def reconnect(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the scheduler to be reachable again."""
        return False

    #: How long to wait for a lost scheduler to come back before the run is Crashed.
    reconnect_timeout: float = 60.0

    def shutdown(self) -> None:
        """Release what `start()` acquired; must be safe to call more than once."""


class Executor(ABC):
    """A description of where tasks run; `start()` it once per top-level flow run."""

    @abstractmethod
    def start(
        self, on_log: Callable[[dict], None], on_events: Callable[[Sequence[TaskEvent]], None] | None = None
    ) -> ExecutorSession:
        """Acquire resources (cluster, client) and return a session that runs task calls.

        `on_log` receives every log line produced by tasks, wherever they run; `on_events`
        their task events (`dagrun.task_events`), times on this process's clock, soon after
        they happen, from any thread.
        """
