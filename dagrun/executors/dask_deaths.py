"""What happens to a dagrun task whose worker dies under it, and how the run learns why.

Policy: Dask reruns a task whose worker died on another worker, up to
`distributed.scheduler.allowed-failures` (3) times, so a task that kills its worker
(`os._exit`, a segfault, its memory limit) takes down 4 of them per submission, each losing
the results held there; and the history never hears of the reruns. dagrun wants one death per
attempt, counted against the task's own retries. So its clients sign up with `WorkerDeaths`,
a scheduler plugin that marks each task they submit as having used up Dask's allowance: the
first death of its worker fails the task with `KilledWorker`, and dagrun decides whether to
submit it again (`task_runs`). The scheduler's setting is left alone: other clients of the
same cluster keep Dask's behaviour, and nothing needs configuring on a remote scheduler.
(The scheduler's own log still says "marked as failed because 4 workers died": it counts
from the allowance.)

Every task of a signed-up client that the dead worker held fails with it, also those waiting
their turn there. Only the ones that were running count the death as an attempt (`task_runs`),
so the plugin notes, as the worker is removed, which of its tasks were running: those its last
heartbeat said were executing and are still unfinished, and, for the threads left, the tasks it
would have started next (the best-priority ones it was processing; it runs them in that order),
less those whose `task-finished` arrives just after the removal (a nanny's word of the death
can overtake the worker's last messages). The driver asks once per dead worker, after waiting
for the death's reason (`WorkerDeaths.running_on`). Each task on a worker first lets the
worker send what it has queued (`dask_worker`), so its predecessor's report is not lost.

Why a worker died is known to its nanny: when it ends a worker for exceeding its memory limit
it logs a `worker-restart-memory` event with the scheduler. `death_reason` finds it.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import time
from collections import OrderedDict
from typing import Any

import distributed
from dask.utils import format_bytes
from distributed.diagnostics.plugin import SchedulerPlugin

MEMORY_TOPIC = "worker-restart-memory"  # logged by the nanny (distributed.worker_memory)
KEEP_DEATHS = 1000  # dead workers whose running tasks are remembered
LATE_REPORTS = 16  # a dead worker's finished tasks whose reports may arrive after its removal
REASON_WAIT = 0.5  # seconds a nanny's account of a worker death may trail the death
logger = logging.getLogger("dagrun.executors")


@dataclasses.dataclass(frozen=True)
class Death:
    """What a worker was doing as it was removed: the tasks it was executing at its last
    heartbeat and had not finished, and its other ready tasks in the order it starts them.
    Its last reports (a `task-finished` batched for up to 2 ms) may arrive just after its
    removal, when its nanny told of the death first: `finished` collects them."""

    nthreads: int
    executing: frozenset
    queue: tuple  # keys, best priority first
    finished: set = dataclasses.field(default_factory=set)

    def running(self) -> frozenset:
        executing = self.executing - self.finished
        threads = max(self.nthreads - len(executing), 0)
        started = [key for key in self.queue if key not in self.finished and key not in executing][:threads]
        return frozenset((*executing, *started))


class WorkerDeaths(SchedulerPlugin):
    """Tasks of signed-up clients fail with `KilledWorker` on their worker's first death."""

    name = "dagrun-worker-deaths"

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.clients: set[str] = set()
        self.workers: dict[str, Any] = dict(scheduler.workers)  # address -> WorkerState, kept through its removal
        self.deaths: OrderedDict[str, Death] = OrderedDict()  # dead worker's address -> what it was doing
        for op in ("task-finished", "task-erred"):
            scheduler.stream_handlers[op] = self._late_report_seen(scheduler.stream_handlers[op])

    def _late_report_seen(self, handler: Any) -> Any:
        def handle(**msg: Any) -> Any:
            death = self.deaths.get(msg.get("worker"))
            if death is not None and msg.get("worker") not in self.scheduler.workers:
                death.finished.add(msg.get("key"))
            return handler(**msg)

        return handle

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.workers[worker] = scheduler.workers[worker]
        self.deaths.pop(worker, None)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.workers.pop(worker, None)  # called after the worker's tasks were failed

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        # `remove_worker` fails the dead worker's first task before the others leave its
        # processing set: the moment to see what it was doing.
        address = kwargs.get("worker")
        if start != "processing" or finish != "erred" or address is None or address in self.deaths:
            return
        ws = self.workers.get(address)
        if ws is None or self.scheduler.workers.get(address) is ws:
            return  # a task that raised on a live worker
        self.deaths[address] = death_of(ws, self.scheduler.tasks.get(key))
        while len(self.deaths) > KEEP_DEATHS:
            self.deaths.popitem(last=False)

    def running_on(self, address: str) -> frozenset | None:
        """The keys dead worker `address` was running; None when its death was not seen."""
        death = self.deaths.get(address)
        return None if death is None else death.running()

    def update_graph(self, scheduler: Any, *, client: str, tasks: list, **kwargs: Any) -> None:
        if client not in self.clients:
            return
        # `remove_worker` fails a processing task once `suspicious > allowed_failures`;
        # counting from the allowance makes that the first death.
        allowed = scheduler.allowed_failures
        for key in tasks:
            task = scheduler.tasks.get(key)
            if task is not None and task.suspicious < allowed:
                task.suspicious = allowed

    def remove_client(self, scheduler: Any, client: str) -> None:
        self.clients.discard(client)


def death_of(ws: Any, first: Any) -> Death:
    """What dead worker `ws` was doing: the still-unfinished tasks its last heartbeat said were
    executing, and the tasks it was processing whose inputs it held, best priority first (a
    worker starts ready tasks in priority order). `first` left its processing set already."""
    processing = set(ws.processing)
    if first is not None:
        processing.add(first)
    executing = {ts for ts in ws.executing if ts in processing and ts not in ws.long_running}
    ready = (
        ts for ts in processing
        if ts not in executing and ts not in ws.long_running and all(ws in dep.who_has for dep in ts.dependencies)
    )
    queue = heapq.nsmallest(ws.nthreads + LATE_REPORTS, ready, key=lambda ts: ts.priority)
    return Death(ws.nthreads, frozenset(ts.key for ts in executing), tuple(ts.key for ts in queue))


def running_on_dead_worker(dask_scheduler: Any, address: str) -> frozenset | None:
    """What `WorkerDeaths` saw dead worker `address` running (run with `run_on_scheduler`)."""
    plugin = dask_scheduler.plugins.get(WorkerDeaths.name)
    return None if plugin is None else plugin.running_on(address)


def install_worker_deaths(dask_scheduler: Any, client: str) -> None:
    """Sign `client` up, adding the plugin unless the scheduler has it (run with
    `run_on_scheduler`)."""
    plugin = dask_scheduler.plugins.get(WorkerDeaths.name)
    if plugin is None:
        plugin = WorkerDeaths(dask_scheduler)
        dask_scheduler.add_plugin(plugin)
    plugin.clients.add(client)


def sign_up_for_worker_deaths(client: distributed.Client) -> None:
    """One worker death per attempt for `client`'s tasks; a scheduler that cannot import
    this module (another dagrun there) keeps Dask's own reruns, with a warning."""
    try:
        client.run_on_scheduler(install_worker_deaths, client=client.id)
    except Exception as exc:  # noqa: BLE001 - the run works without it, as plain Dask does
        logger.warning(
            "The Dask scheduler at %s cannot run dagrun's worker-deaths plugin (%s: %s): a task "
            "whose worker dies is rerun by Dask on other workers, not under its retries. "
            "Install this driver's dagrun next to the scheduler.",
            client.scheduler.address, type(exc).__name__, exc,
        )


class WorkerDeathReasons:
    """Why each dead worker died and what it was running, asked once per worker: it may have
    held thousands of the session's tasks, each failing with its own `KilledWorker`."""

    def __init__(self, client: distributed.Client) -> None:
        self._client = client
        self._reasons: dict[str, str] = {}  # dead worker's address -> why it died
        self._running: dict[str, frozenset | None] = {}  # dead worker's address -> keys it ran

    def was_running(self, killed: Any) -> bool:
        """Whether `killed`'s task (a `KilledWorker`) was running when its worker died; True
        when the scheduler cannot tell, so a death is never free by mistake."""
        address = getattr(getattr(killed, "last_worker", None), "address", None)
        if address is None:
            return True
        if address not in self._running:
            try:
                self._running[address] = self._client.run_on_scheduler(running_on_dead_worker, address=address)
            except Exception:  # noqa: BLE001 - no plugin there, or the scheduler is going
                self._running[address] = None
        running = self._running[address]
        return running is None or getattr(killed, "task", None) in running

    def reason(self, worker: Any) -> str:
        address = getattr(worker, "address", None) or "(unknown)"
        reason = self._reasons.get(address)
        if reason is None:
            reason = self._reasons[address] = death_reason(self._client, worker, wait=REASON_WAIT)
        return reason


def death_reason(client: distributed.Client, worker: Any, wait: float) -> str:
    """Why `worker` (a `KilledWorker`'s `last_worker`) died, as the end of a sentence.

    The nanny logs a memory kill as it terminates the worker, so its event may reach the
    scheduler just after the worker's connection drops: it is looked for up to `wait` s.
    """
    address = getattr(worker, "address", None)
    deadline = time.monotonic() + wait
    while address is not None:
        try:
            events = client.get_events(MEMORY_TOPIC)
        except Exception:  # noqa: BLE001 - the scheduler is going too: the reason stays unknown
            break
        for _, event in events:
            if isinstance(event, dict) and event.get("worker") == address:
                limit = getattr(worker, "memory_limit", None)
                of = f" of {format_bytes(limit)}" if limit else ""
                used = f" ({format_bytes(event['rss'])} in use)" if event.get("rss") else ""
                return (
                    f"its worker {address} was ended by its nanny for reaching its memory limit{of}{used}; "
                    "give workers a larger memory_limit or make the task use less memory"
                )
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)  # the event arrives through the scheduler; there is nothing to wait on
    return f"its worker {address or '(unknown)'} died"
