"""Run task calls on Dask: a local cluster by default, any remote Dask cluster on request.

This is the only module that imports `distributed`. Task calls become `client.submit` calls
whose arguments hold Dask futures, so Dask's scheduler sees every dependency and values move
worker-to-worker. Log lines from workers travel as Dask events on the `dagrun-logs` topic.

The default local cluster is tuned for pipelines rather than array maths:
- one worker process per core with 4 threads each, so I/O-bound tasks overlap while
  CPU-bound tasks still use every core;
- `worker-saturation: inf`, so the scheduler sends tasks to workers eagerly instead of
  queueing them (per-task overhead drops several-fold on small tasks);
- scheduler and dashboard bound to 127.0.0.1, and a 60 s worker TTL so a hung worker is
  detected.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dask
import distributed
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

from dagrun.cluster_config import (
    check_address_allowed,
    import_cluster_class,
    load_cluster_config,
    security_kwargs,
)
from dagrun.errors import ConfigError
from dagrun.executors.base import CANCELLED, ERROR, FINISHED, PENDING, Executor, ExecutorSession, Submission
from dagrun.runner import TaskSpec, load_result, result_content_hash, run_task

LOG_TOPIC = "dagrun-logs"
THREADS_PER_WORKER = 4
_STATUS = {"finished": FINISHED, "error": ERROR, "cancelled": CANCELLED}
_LOCAL_CLUSTER_CONFIG = {
    "distributed.scheduler.worker-saturation": float("inf"),
    "distributed.scheduler.worker-ttl": "60s",
}


def _forward_log(line: dict) -> None:
    """Worker-side log sink: send the line to the driver as a Dask event."""
    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker (e.g. a local client.run); print where we are
        print(line["message"])
        return
    if line.get("kind") == "running":
        line["worker"] = worker.address
    worker.log_event(LOG_TOPIC, line)


# Three entry points, so the common call ships only what it uses (fewer graph nodes per task).
def _run_on_worker(spec: TaskSpec, task_run_id: str, index: int, cache_key: str | None, *args: Any) -> Any:
    return run_task(spec, task_run_id, index, args, {}, _forward_log, cache_key)


def _run_on_worker_with_kwargs(
    spec: TaskSpec, task_run_id: str, index: int, cache_key: str | None, kwargs: dict, *args: Any
) -> Any:
    return run_task(spec, task_run_id, index, args, kwargs, _forward_log, cache_key)


def _run_after(
    spec: TaskSpec, task_run_id: str, index: int, cache_key: str | None, kwargs: dict, _markers: list, *args: Any
) -> Any:
    return run_task(spec, task_run_id, index, args, kwargs, _forward_log, cache_key)


async def _wait_done(futures: Sequence[distributed.Future], timeout: float | None, return_when: str) -> None:
    """Wait for futures to be done in any way (unlike `distributed.wait`, which raises when
    one was cancelled: a cancelled task is an outcome the engine classifies itself)."""
    waiters = [asyncio.ensure_future(future._state.wait()) for future in futures]
    _, not_done = await asyncio.wait(waiters, timeout=timeout, return_when=return_when)
    for waiter in not_done:
        waiter.cancel()


def _same(value: Any) -> Any:
    return value


def _ordering_marker(_upstream: Any) -> None:
    """Runs next to an upstream result and returns nothing: `wait_for` without data movement."""
    return None


def _resource_key(submission: Submission) -> tuple:
    return tuple(sorted((submission.resources or {}).items()))


def default_cluster_size() -> tuple[int, int]:
    """(worker processes, threads per worker) for the default local cluster."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores), THREADS_PER_WORKER


class DaskSession(ExecutorSession):
    def __init__(self, client: distributed.Client, cluster: Any, on_log: Callable[[dict], None]) -> None:
        self.client = client
        self._cluster = cluster  # closed on shutdown only when this session created it
        self.address = client.scheduler.address
        self._shared_specs: dict[int, tuple[TaskSpec, distributed.Future]] = {}
        client.subscribe_topic(LOG_TOPIC, lambda event: on_log(event[1]))

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
                _run_on_worker_with_kwargs if with_kwargs else _run_on_worker,
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

    def _shared(self, spec: TaskSpec) -> distributed.Future:
        """The spec as a Dask task's result, made once and passed by key to each call.

        A task rather than scattered data: if the worker holding it dies, Dask recomputes it
        from the graph (scattered data would be lost, failing every call that needs it)."""
        entry = self._shared_specs.get(id(spec))
        if entry is None:
            future = self.client.submit(_same, spec, key=f"TaskSpec-{spec.task.name}-{uuid.uuid4().hex}", pure=False)
            entry = self._shared_specs[id(spec)] = (spec, future)  # holding spec pins its id
        return entry[1]

    def _submit_one(self, s: Submission) -> distributed.Future:
        spec = self._shared(s.spec)
        options = {"key": s.key, "pure": False, "resources": s.resources}
        if not s.after:
            if s.kwargs:
                return self.client.submit(
                    _run_on_worker_with_kwargs, spec, s.task_run_id, s.index, s.cache_key, s.kwargs, *s.args, **options
                )
            return self.client.submit(_run_on_worker, spec, s.task_run_id, s.index, s.cache_key, *s.args, **options)
        # A marker runs next to each upstream result and returns None, so the call waits for
        # it without the upstream data being copied to the call's worker.
        markers = [
            self.client.submit(_ordering_marker, handle, key=f"wait_for-{uuid.uuid4().hex}", pure=False)
            for handle in s.after
        ]
        return self.client.submit(
            _run_after, spec, s.task_run_id, s.index, s.cache_key, s.kwargs, markers, *s.args, **options
        )

    def load(self, spec: TaskSpec, cache_key: str, *, key: str) -> distributed.Future:
        return self.client.submit(load_result, self._shared(spec), cache_key, key=key, pure=False)

    def content_hash(self, handle: distributed.Future, serializer: str | None) -> distributed.Future:
        return self.client.submit(
            result_content_hash, handle, serializer, key=f"content-hash-{uuid.uuid4().hex}", pure=False
        )

    def status(self, handle: distributed.Future) -> str:
        return _STATUS.get(handle.status, PENDING)

    def wait(self, handles: Sequence[distributed.Future], timeout: float | None) -> bool:
        pending = [handle for handle in handles if handle.status == "pending"]
        if pending:
            self.client.sync(_wait_done, pending, timeout, asyncio.ALL_COMPLETED)
        return all(handle.status != "pending" for handle in pending)

    def wait_any(self, handles: Sequence[distributed.Future], timeout: float | None) -> None:
        pending = [handle for handle in handles if handle.status == "pending"]
        if len(pending) == len(handles) and pending:
            self.client.sync(_wait_done, pending, timeout, asyncio.FIRST_COMPLETED)

    def exception(self, handle: distributed.Future) -> BaseException:
        if handle.status == "cancelled":
            return FutureCancelledError(handle.key, reason="cancelled", msg=None)
        return handle.exception()

    def gather(self, handles: Sequence[distributed.Future]) -> list[Any]:
        return self.client.gather(list(handles))

    def cancel(self, handles: Iterable[distributed.Future]) -> None:
        pending = [handle for handle in handles if handle.status == "pending"]
        if pending:
            self.client.cancel(pending)

    def is_infrastructure_error(self, exception: BaseException) -> bool:
        return isinstance(exception, (KilledWorker, CommClosedError, FutureCancelledError))

    def shutdown(self) -> None:
        client, cluster = self.client, self._cluster
        self._cluster = None
        self._shared_specs.clear()
        try:
            client.unsubscribe_topic(LOG_TOPIC)
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        client.close()
        if cluster is not None:
            cluster.close()


class DaskExecutor(Executor):
    """Run tasks on a Dask cluster.

    | how                                              | what happens                           |
    |--------------------------------------------------|----------------------------------------|
    | `DaskExecutor()`                                 | a LocalCluster for the run, then closed |
    | `DaskExecutor(address="tcp://host:8786")`        | attach to a running scheduler           |
    | `DaskExecutor(cluster="dask_jobqueue.SLURMCluster", cluster_kwargs={...}, adapt={...})` | build that cluster |
    | `DaskExecutor.from_config("remote")`             | read `cluster_configs/remote.yaml`      |
    """

    def __init__(
        self,
        address: str | None = None,
        cluster: str | type | Any | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        adapt: Mapping[str, int] | None = None,
        security: Any = None,
        *,
        insecure: bool = False,
        connect_timeout: float = 60.0,
        source: str = "DaskExecutor(...)",
    ) -> None:
        if address is not None and cluster is not None:
            raise ConfigError(f"{source}: give either address= or cluster=, not both")
        if address is not None:
            if not isinstance(address, str):
                raise ConfigError(f"{source}: address must be a string like 'tls://host:8786', got {address!r}")
            check_address_allowed(address, tls=security is not None, insecure=insecure, source=source)
        self.address = address
        self.cluster = cluster
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.adapt = dict(adapt) if adapt else None
        self.security = security
        self.connect_timeout = connect_timeout
        self.source = source

    @classmethod
    def from_config(cls, name_or_path: str) -> DaskExecutor:
        """Build from `cluster_configs/<name>.yaml` (or a path); errors name the file and key."""
        return cls.from_cluster_config(load_cluster_config(name_or_path))

    @classmethod
    def from_cluster_config(cls, config: Any) -> DaskExecutor:
        kwargs = security_kwargs(config)
        return cls(
            address=config.address,
            cluster=config.cluster_class,
            cluster_kwargs=config.cluster_kwargs,
            adapt=config.adapt,
            security=distributed.Security(**kwargs) if kwargs else None,
            insecure=config.insecure,
            connect_timeout=config.connect_timeout,
            source=config.source,
        )

    def start(self, on_log: Callable[[dict], None]) -> DaskSession:
        if self.address is not None:
            client = distributed.Client(
                self.address, security=self.security, timeout=self.connect_timeout, set_as_default=False
            )
            return DaskSession(client, None, on_log)
        if self.cluster is not None and not isinstance(self.cluster, (str, type)):
            client = distributed.Client(self.cluster, set_as_default=False)  # a running cluster object
            return DaskSession(client, None, on_log)
        cluster = self._create_cluster()
        try:
            if self.adapt:
                cluster.adapt(**self.adapt)
            client = distributed.Client(cluster, security=self.security, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return DaskSession(client, cluster, on_log)

    def _create_cluster(self) -> Any:
        with dask.config.set(_LOCAL_CLUSTER_CONFIG):
            if self.cluster is None:
                workers, threads = default_cluster_size()
                kwargs = {
                    "n_workers": workers,
                    "threads_per_worker": threads,
                    "processes": True,
                    "host": "127.0.0.1",
                    "dashboard_address": "127.0.0.1:0",
                    **self.cluster_kwargs,
                }
                return distributed.LocalCluster(**kwargs)
            if isinstance(self.cluster, type):
                cluster_class = self.cluster
            else:
                cluster_class = import_cluster_class(self.cluster, source=self.source)
            return cluster_class(**self.cluster_kwargs)

    def __repr__(self) -> str:
        target = self.address or (self.cluster if isinstance(self.cluster, str) else None) or "LocalCluster"
        return f"DaskExecutor({target})"

