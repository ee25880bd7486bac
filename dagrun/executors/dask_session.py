"""The driver's live connection to a Dask cluster for one flow run: submission, waits, fetches, shutdown.

`DaskExecutor` (in `dask`) builds the client and the cluster; a `DaskSession` ships task specs
once per session (`SharedSpec`), submits calls whose arguments hold Dask futures, waits for and
fetches their outcomes in batches, and says which errors are the infrastructure's (a worker's
death, with the reason `dask_deaths` recorded; a lost scheduler). Shutting down closes only
what the session created.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import distributed
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.protocol.pickle import dumps
from distributed.scheduler import KilledWorker

from dagrun.concurrency import read_limits
from dagrun.executors.base import CANCELLED, ERROR, FINISHED, PENDING, ExecutorSession, Submission
from dagrun.executors.dask_clusters import close_worker_processes
from dagrun.executors.dask_deaths import WorkerDeathReasons, sign_up_for_worker_deaths
from dagrun.executors.dask_event_receiver import EventReceiver
from dagrun.executors.dask_events import EVENT_TOPIC
from dagrun.executors.dask_logs import LOG_TOPIC, receive
from dagrun.executors.dask_version_gate import REFUSED_TOPIC, VersionGate, fail_waiting_tasks, install_gate, remove_gate
from dagrun.executors.dask_worker import (
    TagSlots,
    load_on_worker,
    ordering_marker,
    run_after,
    run_on_worker,
    run_on_worker_with_kwargs,
)
from dagrun.runner import SharedSpec, TaskSpec, result_content_hash
from dagrun.secrets import known_values
from dagrun.task_events import TaskEvent
from dagrun.tracebacks import was_captured

logger = logging.getLogger("dagrun.executors")
_STATUS = {"finished": FINISHED, "error": ERROR, "cancelled": CANCELLED}


async def _wait_done(
    futures: Sequence[distributed.Future], timeout: float | None, return_when: str, woken: asyncio.Event
) -> None:
    """Wait for futures to be done in any way (unlike `distributed.wait`, which raises when
    one was cancelled: a cancelled task is an outcome the engine classifies itself), or until
    the session is interrupted (`woken` set: the run is being cancelled)."""
    if return_when == asyncio.ALL_COMPLETED:
        # One coroutine awaiting each in turn (a done one returns at once), not a task per
        # future: 2,000 waiting tasks cost the client's loop, which the scheduler of a local
        # cluster competes with for the GIL, more than the wait itself.
        waiters = [asyncio.ensure_future(_each_done(futures))]
    else:
        waiters = [asyncio.ensure_future(future._state.wait()) for future in futures]
    done = asyncio.ensure_future(asyncio.wait(waiters, return_when=return_when))
    wake = asyncio.ensure_future(woken.wait())
    try:
        await asyncio.wait((done, wake), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (*waiters, done, wake):
            waiter.cancel()


async def _each_done(futures: Sequence[distributed.Future]) -> None:
    for future in futures:
        await future._state.wait()


def _is_loopback(address: str | None) -> bool:
    host = urllib.parse.urlparse(address or "").hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


class DaskSession(ExecutorSession):
    """A flow run's use of one Dask client (and the cluster, when the executor started one)."""

    def __init__(
        self,
        client: distributed.Client,
        cluster: Any,
        on_log: Callable[[dict], None],
        on_events: Callable[[Sequence[TaskEvent]], None] | None = None,
        *,
        concurrency_limits: Callable[[], Mapping[str, int]] = read_limits,
    ) -> None:
        self.client = client
        self._cluster = cluster  # closed on shutdown only when this session created it
        self.address = client.scheduler.address
        self._shared_specs: dict[int, tuple[TaskSpec, SharedSpec, tuple[str, ...]]] = {}
        self._read_limits = concurrency_limits
        self._limits: Mapping[str, int] | None = None  # tag -> limit, read once, when first needed
        self._interrupted = False  # set once by `interrupt`, from any thread or a signal handler
        self._woken = asyncio.Event()  # the same, for waits in progress on the client's loop
        self._cancelled_tasks = False  # some were cancelled while running: stop workers hard
        self._deaths = WorkerDeathReasons(client)
        self._version_gate: str | None = None  # the name of this session's VersionGate, once installed
        # Workers of a scheduler on this machine's loopback are on this machine too: batches
        # come straight from them, one hop fewer than through the scheduler.
        self._direct_gather = _is_loopback(self.address)
        client.subscribe_topic(LOG_TOPIC, receive(on_log))
        self._events = EventReceiver(client, on_events)
        client.subscribe_topic(EVENT_TOPIC, self._events)
        sign_up_for_worker_deaths(client)

    def check_joining_workers(self, driver_versions: Mapping[str, Any], source: str) -> None:
        """Check each worker that joins from now on: a refused one ends the run (`VersionGate`)."""
        self.client.subscribe_topic(REFUSED_TOPIC, lambda event: fail_waiting_tasks(self.client, source, event[1]))
        name = f"dagrun-version-gate-{self.client.id}"
        try:
            self.client.run_on_scheduler(install_gate, name=name, plugin=dumps(VersionGate(driver_versions)))
            self._version_gate = name
        except Exception as exc:  # noqa: BLE001 - a scheduler with another dagrun: run without the gate
            self.client.unsubscribe_topic(REFUSED_TOPIC)
            logger.warning("Workers that join %s later are not version-checked: %s", self.address, exc)

    def submit_many(self, submissions: Sequence[Submission]) -> list[distributed.Future]:
        first = submissions[0]
        uniform = all(
            not s.after and len(s.args) == len(first.args) and s.resources == first.resources
            for s in submissions
        )
        if len(submissions) > 1 and uniform:
            # One graph update for the whole batch (a `map`): much cheaper than a submit per call.
            spec = self._shared(first.spec)
            with_kwargs = any(s.kwargs for s in submissions)
            return self.client.map(
                run_on_worker_with_kwargs if with_kwargs else run_on_worker,
                [spec] * len(submissions),
                [s.task_run_id for s in submissions],
                [s.index for s in submissions],
                [s.cache_key for s in submissions],
                *([[s.kwargs for s in submissions]] if with_kwargs else []),
                *zip(*(s.args for s in submissions)),
                key=[s.key for s in submissions],
                pure=False,
                resources=first.resources,
            )
        return [self._submit_one(submission) for submission in submissions]

    def _shared(self, spec: TaskSpec) -> SharedSpec:
        """The spec pickled once per session; each call carries these bytes, and each worker
        unpickles them once (see `SharedSpec`).

        Not a Dask future that calls depend on: Dask places a task next to its dependencies,
        so every call would crowd onto the one worker holding the spec."""
        secret_values = known_values()  # workers mask them (see `dagrun.secrets`)
        entry = self._shared_specs.get(id(spec))
        if entry is None or entry[2] != secret_values:  # again when the driver learned a secret
            shipped = dataclasses.replace(
                spec, concurrency_slots=self._slots_for(spec.task), secret_values=secret_values
            )
            # Holding `spec` pins its id.
            entry = self._shared_specs[id(spec)] = (spec, SharedSpec.of(shipped), secret_values)
        return entry[1]

    def _slots_for(self, task: Any) -> TagSlots | None:
        """What a run of `task` holds while it runs: a slot per tag that has a concurrency
        limit. Limits are read once per session, when the first tagged task is shipped."""
        tags = getattr(task, "tags", None)
        if not tags:
            return None
        if self._limits is None:
            self._limits = self._read_limits()
        limits = tuple(sorted((tag, self._limits[tag]) for tag in tags if tag in self._limits))
        return TagSlots(limits) if limits else None

    def _submit_one(self, s: Submission) -> distributed.Future:
        spec = self._shared(s.spec)
        options = {"key": s.key, "pure": False, "resources": s.resources}
        if not s.after:
            if s.kwargs:
                return self.client.submit(
                    run_on_worker_with_kwargs, spec, s.task_run_id, s.index, s.cache_key, s.kwargs, *s.args, **options
                )
            return self.client.submit(run_on_worker, spec, s.task_run_id, s.index, s.cache_key, *s.args, **options)
        # A marker runs next to each upstream result and returns None, so the call waits for
        # it without the upstream data being copied to the call's worker.
        markers = [
            self.client.submit(ordering_marker, handle, key=f"wait_for-{uuid.uuid4().hex}", pure=False)
            for handle in s.after
        ]
        return self.client.submit(
            run_after, spec, s.task_run_id, s.index, s.cache_key, s.kwargs, markers, *s.args, **options
        )

    def load(self, spec: TaskSpec, cache_key: str, *, key: str) -> distributed.Future:
        return self.client.submit(load_on_worker, self._shared(spec), cache_key, key=key, pure=False)

    def content_hash(self, handle: distributed.Future, serializer: str | None) -> distributed.Future:
        return self.client.submit(
            result_content_hash, handle, serializer, key=f"content-hash-{uuid.uuid4().hex}", pure=False
        )

    def status(self, handle: distributed.Future) -> str:
        return _STATUS.get(handle.status, PENDING)

    def wait(self, handles: Sequence[distributed.Future], timeout: float | None) -> bool:
        pending = [handle for handle in handles if handle.status == "pending"]
        if pending and not self._interrupted:
            self.client.sync(_wait_done, pending, timeout, asyncio.ALL_COMPLETED, self._woken)
        return all(handle.status != "pending" for handle in pending)

    def wait_any(self, handles: Sequence[distributed.Future], timeout: float | None) -> None:
        pending = [handle for handle in handles if handle.status == "pending"]
        if len(pending) == len(handles) and pending and not self._interrupted:
            self.client.sync(_wait_done, pending, timeout, asyncio.FIRST_COMPLETED, self._woken)

    def interrupt(self) -> None:
        self._interrupted = True
        try:
            self.client.loop.asyncio_loop.call_soon_threadsafe(self._woken.set)
        except RuntimeError:  # the client's loop is closed: nothing is waiting on it
            pass

    def exception(self, handle: distributed.Future) -> BaseException:
        if handle.status == "cancelled":
            recorded = handle._state.exception  # carries why: e.g. the scheduler connection was lost
            if isinstance(recorded, FutureCancelledError):
                return recorded
            return FutureCancelledError(handle.key, reason="cancelled", msg=None)
        exception = handle.exception()
        if was_captured(exception):
            # Its traceback is Dask's rebuild of the worker's frames, without file names or
            # source lines; the worker's rendering travels with it (see `dagrun.tracebacks`).
            exception.__traceback__ = None
        return exception

    def scheduler_lost(self, exception: BaseException) -> bool:
        return isinstance(exception, FutureCancelledError) and exception.reason == "scheduler-connection-lost"

    def reconnect(self, timeout: float) -> bool:
        """Wait for the client's own reconnection loop (it retries for `connect_timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._interrupted:
            if self.client.status == "running":
                self._shared_specs.clear()  # the new scheduler has none of them
                sign_up_for_worker_deaths(self.client)  # nor its plugins
                return True
            if self.client.status in ("closing", "closed"):
                return False
            time.sleep(0.1)  # polling the client's state: it offers no event to wait on
        return self.client.status == "running"

    def gather(self, handles: Sequence[distributed.Future]) -> list[Any]:
        return self.client.gather(list(handles))

    def fetch_batch(self, handles: Sequence[distributed.Future], max_bytes: int) -> dict[int, tuple[Any, int]]:
        try:
            return self.client.sync(self._fetch_batch, list(handles), max_bytes)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - a key lost or cancelled meanwhile,
            return {}  # a neighbour's error: the caller fetches what it asked for the usual way

    async def _fetch_batch(self, handles: list[distributed.Future], max_bytes: int) -> dict[int, tuple[Any, int]]:
        """Ask the scheduler for the sizes (`nbytes`), then gather the chosen handles together."""
        keys = [handle.key for handle in handles]
        sizes = await self.client.nbytes(keys=keys, summary=False, asynchronous=True) if len(keys) > 1 else {}
        chosen: list[int] = []
        total = 0
        for position, key in enumerate(keys):
            size = sizes.get(key, -1)
            size = size if size >= 0 else max_bytes  # unknown counts as a whole batch
            if position and total + size > max_bytes:
                continue
            chosen.append(position)
            total += size
        values = await self.client.gather(
            [handles[position] for position in chosen], direct=self._direct_gather, asynchronous=True
        )
        return {position: (value, max(sizes.get(keys[position], 0), 0)) for position, value in zip(chosen, values)}

    def cancel(self, handles: Iterable[distributed.Future]) -> None:
        pending = [handle for handle in handles if handle.status == "pending"]
        if pending:
            self._cancelled_tasks = True
            self.client.cancel(pending)

    def flush_events(self, timeout: float = 10.0) -> None:
        """Deliver the task events workers still hold (see `EventReceiver.drain`)."""
        try:
            self._events.drain(timeout)
        except Exception:  # noqa: BLE001 - the scheduler may be gone; the history keeps what it has
            pass

    def is_infrastructure_error(self, exception: BaseException) -> bool:
        return isinstance(exception, (KilledWorker, CommClosedError, FutureCancelledError))

    def describe_infrastructure_error(self, exception: BaseException) -> str:
        if isinstance(exception, KilledWorker):
            return f"KilledWorker: {self._deaths.reason(exception.last_worker)}"
        return super().describe_infrastructure_error(exception)

    def was_running(self, exception: BaseException) -> bool:
        return not isinstance(exception, KilledWorker) or self._deaths.was_running(exception)

    def shutdown(self) -> None:
        client, cluster = self.client, self._cluster
        self._cluster = None
        self._shared_specs.clear()
        try:
            client.unsubscribe_topic(LOG_TOPIC)
            client.unsubscribe_topic(EVENT_TOPIC)
            if self._version_gate is not None:
                client.unsubscribe_topic(REFUSED_TOPIC)
                if cluster is None:  # a scheduler that outlives this session keeps no gate of it
                    client.run_on_scheduler(remove_gate, name=self._version_gate)
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        if cluster is not None and self._cancelled_tasks:
            # Cancelling a future does not stop its task's thread; a busy worker would hold up
            # the close for 4 s (Nanny.close), so it is killed after a short grace instead.
            close_worker_processes(cluster, grace=0.5)
        client.close()
        if cluster is not None:
            cluster.close()

