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

Clusters dagrun starts from a class (`cluster=`) get the same scheduler settings, and the
config's `worker_env` / `scheduler_options` are put where each family of classes takes them
(`managed_cluster_kwargs`). Before a session runs anything on workers it did not start, it
checks their Python minor version, dagrun and cloudpickle against the driver's (one Dask
version broadcast per flow run). Tasks with `resources=` run only on workers that declare
them; tags with a concurrency limit hold a `distributed.Semaphore` lease per task run
(`TagSlots`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shlex
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from dagrun.concurrency import read_limits
from dagrun.errors import ConfigError
from dagrun.executors.base import CANCELLED, ERROR, FINISHED, PENDING, Executor, ExecutorSession, Submission
from dagrun.logs import get_run_logger
from dagrun.runner import SharedSpec, TaskSpec, load_result, result_content_hash, run_task

LOG_TOPIC = "dagrun-logs"
THREADS_PER_WORKER = 4
_STATUS = {"finished": FINISHED, "error": ERROR, "cancelled": CANCELLED}
# Set while dagrun starts a cluster: read by a scheduler started in this process, and passed
# on by SSHCluster to the processes it starts. A scheduler in a pod reads environment variables.
_MANAGED_CLUSTER_CONFIG = {
    "distributed.scheduler.worker-saturation": float("inf"),
    "distributed.scheduler.worker-ttl": "60s",
}
_KUBERNETES_SCHEDULER_ENV = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "60s"}
_SCHEDULER_OPTIONS_ARGUMENT = {"local": "scheduler_kwargs", "ssh": "scheduler_options", "jobqueue": "scheduler_options"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MATCHED_PACKAGES = ("dagrun", "cloudpickle")  # and the Python minor version


def _forward_log(line: dict) -> None:
    """Worker-side log sink: send the line to the driver as a Dask event."""
    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker (e.g. a local client.run); print where we are
        print(line["message"])
        return
    if line.get("kind") == "finished":
        line["worker"] = worker.address
    worker.log_event(LOG_TOPIC, line)


# Three entry points, so the common call ships only what it uses (fewer graph nodes per task).
def _run_on_worker(spec: SharedSpec, task_run_id: str, index: int, cache_key: str | None, *args: Any) -> Any:
    return run_task(spec.load(), task_run_id, index, args, {}, _forward_log, cache_key)


def _run_on_worker_with_kwargs(
    spec: SharedSpec, task_run_id: str, index: int, cache_key: str | None, kwargs: dict, *args: Any
) -> Any:
    return run_task(spec.load(), task_run_id, index, args, kwargs, _forward_log, cache_key)


def _run_after(
    spec: SharedSpec, task_run_id: str, index: int, cache_key: str | None, kwargs: dict, _markers: list, *args: Any
) -> Any:
    return run_task(spec.load(), task_run_id, index, args, kwargs, _forward_log, cache_key)


def _load_on_worker(spec: SharedSpec, cache_key: str) -> Any:
    return load_result(spec.load(), cache_key)


async def _wait_done(futures: Sequence[distributed.Future], timeout: float | None, return_when: str) -> None:
    """Wait for futures to be done in any way (unlike `distributed.wait`, which raises when
    one was cancelled: a cancelled task is an outcome the engine classifies itself)."""
    waiters = [asyncio.ensure_future(future._state.wait()) for future in futures]
    _, not_done = await asyncio.wait(waiters, timeout=timeout, return_when=return_when)
    for waiter in not_done:
        waiter.cancel()


def _ordering_marker(_upstream: Any) -> None:
    """Runs next to an upstream result and returns nothing: `wait_for` without data movement."""
    return None


def _resource_key(submission: Submission) -> tuple:
    return tuple(sorted((submission.resources or {}).items()))


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


def version_mismatches(versions: Mapping[str, Any]) -> list[str]:
    """One line per worker whose Python minor version, dagrun or cloudpickle differs from the
    driver's, in the form `Client.get_versions(packages=["dagrun"])` returns."""
    expected = _matched_versions(versions["client"])
    problems = []
    for address, report in sorted(versions["workers"].items()):
        found = _matched_versions(report)
        differences = [
            f"{name} {found[name] or 'missing'} (driver: {expected[name] or 'missing'})"
            for name in expected
            if found[name] != expected[name]
        ]
        if differences:
            problems.append(f"worker {address} has {', '.join(differences)}")
    return problems


def _matched_versions(report: Any) -> dict[str, str | None]:
    packages = (report.get("packages") if isinstance(report, Mapping) else None) or {}
    python = packages.get("python")
    minor = ".".join(str(python).split(".")[:2]) if python else None
    return {"python": minor, **{name: packages.get(name) for name in _MATCHED_PACKAGES}}


def check_worker_versions(client: distributed.Client, source: str) -> None:
    """Refuse workers that could not run this driver's tasks (pickled by this Python and
    cloudpickle, calling this dagrun), before anything is submitted. Workers that join later
    (adaptive scaling from zero) are not checked; Dask logs its own version warnings for them."""
    problems = version_mismatches(client.get_versions(packages=["dagrun"]))
    if problems:
        raise ConfigError(
            f"{source}: the workers of the scheduler at {client.scheduler.address} do not match "
            f"this driver: {'; '.join(problems)}. Install the same Python minor version, dagrun "
            "and cloudpickle on the workers as here (tasks are pickled here and run there); "
            "nothing was submitted"
        )


def _check_tls_configured(address: str, source: str) -> None:
    """A tls:// address needs this client's TLS files: from the config's `security` block or
    Dask's own `distributed.comm.tls` settings. Without them, refuse now with the fix, rather
    than let distributed fail inside its connection attempt."""
    if distributed.Security().get_connection_args("client").get("ssl_context") is None:
        raise ConfigError(
            f"{source}: address {address!r} is tls:// but no TLS files are configured for this "
            "client: add a 'security:' block (ca_file, cert, key) to the cluster config, or pass "
            "security=distributed.Security(...)"
        )


def _cluster_family(cluster_class: Any) -> str:
    """Which arguments of `cluster_class` take worker_env and scheduler_options: 'local',
    'ssh', 'jobqueue', 'kubernetes', or 'other' (neither is supported)."""
    if isinstance(cluster_class, type) and issubclass(cluster_class, distributed.LocalCluster):
        return "local"
    if cluster_class is distributed.SSHCluster:
        return "ssh"
    package = str(getattr(cluster_class, "__module__", "")).partition(".")[0]
    return {"dask_jobqueue": "jobqueue", "dask_kubernetes": "kubernetes"}.get(package, "other")


def managed_cluster_kwargs(
    cluster_class: Any,
    cluster_kwargs: Mapping[str, Any],
    *,
    worker_env: Mapping[str, str],
    scheduler_options: Mapping[str, Any],
    source: str,
) -> dict[str, Any]:
    """`cluster_kwargs` with the config's `worker_env` and `scheduler_options` put where
    `cluster_class` takes them; a ConfigError, before anything starts, where it takes none.

    | cluster class              | worker_env                          | scheduler_options    |
    |----------------------------|-------------------------------------|----------------------|
    | LocalCluster (processes)   | `env=` of each worker's Nanny       | `scheduler_kwargs=`  |
    | SSHCluster                 | `worker_options.env` (each Nanny)   | `scheduler_options=` |
    | dask-jobqueue classes      | `export` lines in `job_script_prologue` | `scheduler_options=` |
    | dask-kubernetes KubeCluster| `env=` (scheduler and worker pods)  | not supported        |

    KubeCluster also gets the 60 s worker TTL as an environment variable, since its scheduler
    runs in a pod that does not see this process's Dask config.
    """
    kwargs = dict(cluster_kwargs)
    family = _cluster_family(cluster_class)
    name = getattr(cluster_class, "__qualname__", repr(cluster_class))
    worker_env = dict(worker_env)
    if family == "kubernetes":
        kwargs["env"] = _kubernetes_env(kwargs.get("env"), worker_env)
    elif worker_env and family == "local":
        if kwargs.get("processes") is False:
            raise ConfigError(
                f"{source}: worker_env needs worker processes, but cluster.kwargs sets "
                "processes: false (threaded workers share this process's environment)"
            )
        kwargs["env"] = {**(kwargs.get("env") or {}), **worker_env}
    elif worker_env and family == "ssh":
        worker_options = dict(kwargs.get("worker_options") or {})
        worker_options["env"] = {**(worker_options.get("env") or {}), **worker_env}
        kwargs["worker_options"] = worker_options
    elif worker_env and family == "jobqueue":
        for variable in worker_env:
            if not _ENV_NAME.fullmatch(variable):
                raise ConfigError(
                    f"{source}: worker_env.{variable}: a job script cannot export this name; "
                    "use letters, digits and _ (not starting with a digit)"
                )
        prologue = kwargs.get("job_script_prologue") or []
        prologue = [prologue] if isinstance(prologue, str) else list(prologue)
        exports = [f"export {variable}={shlex.quote(value)}" for variable, value in worker_env.items()]
        kwargs["job_script_prologue"] = [*prologue, *exports]
    elif worker_env:
        raise ConfigError(
            f"{source}: worker_env is not supported for cluster class '{name}' (dagrun passes it "
            "to LocalCluster, SSHCluster, dask-jobqueue and dask-kubernetes clusters); set the "
            "workers' environment through that class's own arguments in cluster.kwargs"
        )
    if scheduler_options:
        argument = _SCHEDULER_OPTIONS_ARGUMENT.get(family)
        if argument is None:
            raise ConfigError(
                f"{source}: scheduler_options is not supported for cluster class '{name}' "
                "(dagrun passes it to LocalCluster, SSHCluster and dask-jobqueue clusters); "
                "set the scheduler's options through that class's own arguments in cluster.kwargs"
            )
        if argument in kwargs:
            raise ConfigError(
                f"{source}: scheduler options are set twice: top-level 'scheduler_options' and "
                f"cluster.kwargs.{argument}; keep one"
            )
        kwargs[argument] = dict(scheduler_options)
    return kwargs


def _kubernetes_env(env: Any, worker_env: dict[str, str]) -> Any:
    """KubeCluster's `env` (a mapping, or Kubernetes' list of {name, value}) with dagrun's
    scheduler settings under it and `worker_env` over it."""
    if env is None:
        env = dask.config.get("kubernetes.env", default=None)
    if env is None or isinstance(env, Mapping):
        return {**_KUBERNETES_SCHEDULER_ENV, **(env or {}), **worker_env}
    named = {item.get("name") for item in env if isinstance(item, Mapping)}
    defaults = [{"name": k, "value": v} for k, v in _KUBERNETES_SCHEDULER_ENV.items() if k not in named]
    kept = [item for item in env if not (isinstance(item, Mapping) and item.get("name") in worker_env)]
    return [*defaults, *kept, *({"name": k, "value": v} for k, v in worker_env.items())]


def default_cluster_size() -> tuple[int, int]:
    """(worker processes, threads per worker) for the default local cluster."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores), THREADS_PER_WORKER


class DaskSession(ExecutorSession):
    def __init__(
        self,
        client: distributed.Client,
        cluster: Any,
        on_log: Callable[[dict], None],
        *,
        concurrency_limits: Callable[[], Mapping[str, int]] = read_limits,
    ) -> None:
        self.client = client
        self._cluster = cluster  # closed on shutdown only when this session created it
        self.address = client.scheduler.address
        self._shared_specs: dict[int, tuple[TaskSpec, SharedSpec]] = {}
        self._read_limits = concurrency_limits
        self._limits: Mapping[str, int] | None = None  # tag -> limit, read once, when first needed
        self._collecting_timings = False
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

    def _shared(self, spec: TaskSpec) -> SharedSpec:
        """The spec pickled once per session; each call carries these bytes, and each worker
        unpickles them once (see `SharedSpec`).

        Not a Dask future that calls depend on: Dask places a task next to its dependencies,
        so every call would crowd onto the one worker holding the spec."""
        entry = self._shared_specs.get(id(spec))
        if entry is None:
            # Timings come from Dask's task stream (`task_timings`), not from per-task records.
            shipped = dataclasses.replace(spec, report=False, concurrency_slots=self._slots_for(spec.task))
            entry = self._shared_specs[id(spec)] = (spec, SharedSpec.of(shipped))  # holding spec pins its id
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
        return self.client.submit(_load_on_worker, self._shared(spec), cache_key, key=key, pure=False)

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
            recorded = handle._state.exception  # carries why: e.g. the scheduler connection was lost
            if isinstance(recorded, FutureCancelledError):
                return recorded
            return FutureCancelledError(handle.key, reason="cancelled", msg=None)
        return handle.exception()

    def scheduler_lost(self, exception: BaseException) -> bool:
        return isinstance(exception, FutureCancelledError) and exception.reason == "scheduler-connection-lost"

    def reconnect(self, timeout: float) -> bool:
        """Wait for the client's own reconnection loop (it retries for `connect_timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.status == "running":
                self._shared_specs.clear()  # the new scheduler has none of them
                if self._collecting_timings:  # nor its task stream
                    self._collecting_timings = False
                    self.collect_timings()
                return True
            if self.client.status in ("closing", "closed"):
                return False
            time.sleep(0.1)  # polling the client's state: it offers no event to wait on
        return self.client.status == "running"

    def gather(self, handles: Sequence[distributed.Future]) -> list[Any]:
        return self.client.gather(list(handles))

    def cancel(self, handles: Iterable[distributed.Future]) -> None:
        pending = [handle for handle in handles if handle.status == "pending"]
        if pending:
            self.client.cancel(pending)

    def collect_timings(self) -> None:
        if not self._collecting_timings:
            self.client.get_task_stream(start=time.time())  # switches on the scheduler's task stream
            self._collecting_timings = True

    def task_timings(self, since: float) -> dict[str, tuple[str, float, float]]:
        """key -> (worker, start, stop) of tasks computed since `since`, from the task stream."""

        # Boiled down on the scheduler: a fraction of the bytes `get_task_stream` sends. Nested,
        # so it is pickled by value and a scheduler without dagrun installed can run it.
        def compute_spans(dask_scheduler: Any, start: float) -> dict[str, tuple[str, float, float]]:
            plugin = dask_scheduler.plugins.get("task-stream")
            spans = {}
            for record in plugin.collect(start=start) if plugin is not None else ():
                computes = [s for s in record["startstops"] if s.get("action") == "compute"]
                if computes:
                    spans[record["key"]] = (record.get("worker"), computes[0]["start"], computes[-1]["stop"])
            return spans

        return self.client.run_on_scheduler(compute_spans, start=since)

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

    `worker_env` and `scheduler_options` apply to clusters dagrun starts (see
    `managed_cluster_kwargs`); workers dagrun did not start are checked for matching
    versions (`check_worker_versions`) when a session starts.
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
        worker_env: Mapping[str, str] | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
        source: str = "DaskExecutor(...)",
    ) -> None:
        if address is not None and cluster is not None:
            raise ConfigError(f"{source}: give either address= or cluster=, not both")
        running = address is not None or (cluster is not None and not isinstance(cluster, (str, type)))
        for name, value in (("worker_env", worker_env), ("scheduler_options", scheduler_options)):
            if value and running:
                raise ConfigError(
                    f"{source}: '{name}' needs a cluster that dagrun starts ('cluster'); the "
                    "scheduler and workers it would attach to are already running"
                )
        if address is not None:
            if not isinstance(address, str):
                raise ConfigError(f"{source}: address must be a string like 'tls://host:8786', got {address!r}")
            check_address_allowed(address, tls=security is not None, insecure=insecure, source=source)
            if security is None and address.strip().lower().startswith("tls://"):
                _check_tls_configured(address, source)
        self.address = address
        self.cluster = cluster
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.adapt = dict(adapt) if adapt else None
        self.security = security
        self.connect_timeout = connect_timeout
        self.worker_env = dict(worker_env or {})
        self.scheduler_options = dict(scheduler_options or {})
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
            worker_env=config.worker_env,
            scheduler_options=config.scheduler_options,
            source=config.source,
        )

    def start(self, on_log: Callable[[dict], None]) -> DaskSession:
        if self.address is not None:
            client = distributed.Client(
                self.address, security=self.security, timeout=self.connect_timeout, set_as_default=False
            )
            return self._session(client, None, on_log, check_versions=True)
        if self.cluster is not None and not isinstance(self.cluster, (str, type)):
            client = distributed.Client(self.cluster, set_as_default=False)  # a running cluster object
            return self._session(client, None, on_log, check_versions=True)
        cluster_class, kwargs = self.cluster_arguments()
        with dask.config.set(_MANAGED_CLUSTER_CONFIG):
            cluster = cluster_class(**kwargs)
        try:
            if self.adapt:
                if not callable(getattr(cluster, "adapt", None)):
                    raise ConfigError(
                        f"{self.source}: adapt: a {type(cluster).__name__} cannot scale adaptively "
                        "(it has no adapt() method); remove 'adapt'"
                    )
                cluster.adapt(**self.adapt)
            client = distributed.Client(cluster, security=self.security, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        # A LocalCluster's workers are this interpreter's children: nothing to compare.
        return self._session(client, cluster, on_log, check_versions=_cluster_family(cluster_class) != "local")

    def _session(
        self, client: distributed.Client, cluster: Any, on_log: Callable[[dict], None], *, check_versions: bool
    ) -> DaskSession:
        try:
            if check_versions:
                check_worker_versions(client, self.source)
            session = DaskSession(client, cluster, on_log)
            session.reconnect_timeout = self.connect_timeout
            return session
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise

    def cluster_arguments(self) -> tuple[Any, dict[str, Any]]:
        """(cluster class, keyword arguments) of the cluster `start()` creates, without
        creating it: configuration errors surface here, before anything starts."""
        if self.cluster is None:
            workers, threads = default_cluster_size()
            cluster_class: Any = distributed.LocalCluster
            kwargs = {
                "n_workers": workers,
                "threads_per_worker": threads,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": "127.0.0.1:0",
                **self.cluster_kwargs,
            }
        elif isinstance(self.cluster, type):
            cluster_class, kwargs = self.cluster, self.cluster_kwargs
        elif isinstance(self.cluster, str):
            cluster_class = import_cluster_class(self.cluster, source=self.source)
            kwargs = self.cluster_kwargs
        else:
            raise ConfigError(f"{self.source}: the cluster object {self.cluster!r} is already running")
        kwargs = managed_cluster_kwargs(
            cluster_class, kwargs,
            worker_env=self.worker_env, scheduler_options=self.scheduler_options, source=self.source,
        )
        if self.adapt and isinstance(cluster_class, type) and not callable(getattr(cluster_class, "adapt", None)):
            raise ConfigError(
                f"{self.source}: adapt: cluster class '{cluster_class.__qualname__}' cannot scale "
                "adaptively (it has no adapt() method); remove 'adapt'"
            )
        return cluster_class, kwargs

    def __repr__(self) -> str:
        target = self.address or (self.cluster if isinstance(self.cluster, str) else None) or "LocalCluster"
        return f"DaskExecutor({target})"

