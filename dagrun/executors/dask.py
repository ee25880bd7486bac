"""Run task calls on Dask: a local cluster by default, any remote Dask cluster on request.

The driver's side of the Dask executor. Task calls become `client.submit` calls whose arguments
hold Dask futures, so Dask's scheduler sees every dependency and values move worker-to-worker.
What runs on workers is in `dask_worker` (pickled by reference, so workers import only it);
building and checking clusters is in `dask_clusters`; the session that submits calls, waits
for and fetches their outcomes is in `dask_session`. This module configures and starts them.

Before a session runs anything on workers it did not start, it checks their versions against
the driver's (one Dask version broadcast per flow run); workers that join later are checked as
they join (`dask_version_gate`). Tasks with `resources=` run only on workers that declare them;
tags with a concurrency limit hold a `distributed.Semaphore` lease per task run (`TagSlots`,
shipped once per task in its spec). A worker's death fails the tasks it held at once
(`dask_deaths`), so the engine decides about reruns (under each task's retries for the ones it
was running, free for the ones queued there), and says why the worker died.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask
import distributed

from dagrun.cluster_config import (
    check_address_allowed,
    load_cluster_config,
    security_kwargs,
)
from dagrun.errors import ConfigError
from dagrun.executors.base import Executor
from dagrun.executors.cluster_checks import construction_error
from dagrun.executors.dask_clusters import (
    MANAGED_CLUSTER_CONFIG,
    check_tls_configured,
    check_worker_versions,
    connect_failure,
    cluster_arguments,
    cluster_family,
)
from dagrun.executors.dask_logs import silence_compute_failed
from dagrun.executors.dask_session import DaskSession
from dagrun.task_events import TaskEvent


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
    versions (`check_worker_versions`) when a session starts, and when they join later.
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
                check_tls_configured(address, source)
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

    def start(
        self, on_log: Callable[[dict], None], on_events: Callable[[Sequence[TaskEvent]], None] | None = None
    ) -> DaskSession:
        if self.address is not None:
            try:
                client = distributed.Client(
                    self.address, security=self.security, timeout=self.connect_timeout, set_as_default=False
                )
            except OSError as error:  # TimeoutError included: distributed retries until the timeout
                raise self._unreachable(error) from error
            return self._session(client, None, on_log, on_events, check_versions=True)
        if self.cluster is not None and not isinstance(self.cluster, (str, type)):
            client = distributed.Client(self.cluster, set_as_default=False)  # a running cluster object
            return self._session(client, None, on_log, on_events, check_versions=True)
        cluster_class, kwargs = self.cluster_arguments()
        if kwargs.get("processes") is False:  # a LocalCluster's threaded workers log here
            silence_compute_failed()
        with dask.config.set(MANAGED_CLUSTER_CONFIG):
            try:
                cluster = cluster_class(**kwargs)
            except (TypeError, ValueError) as error:  # a kwarg whose type the class does not state
                raise construction_error(cluster_class, self.cluster_kwargs, error, source=self.source) from error
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
        local = cluster_family(cluster_class) == "local"
        return self._session(client, cluster, on_log, on_events, check_versions=not local)

    def _session(
        self, client: distributed.Client, cluster: Any, on_log: Callable[[dict], None],
        on_events: Callable[[Sequence[TaskEvent]], None] | None, *, check_versions: bool,
    ) -> DaskSession:
        try:
            driver_versions = check_worker_versions(client, self.source) if check_versions else None
            session = DaskSession(client, cluster, on_log, on_events)
            if driver_versions is not None:
                session.check_joining_workers(driver_versions, self.source)
            session.reconnect_timeout = self.connect_timeout
            return session
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise

    def _unreachable(self, error: OSError) -> ConfigError:
        """One line for a scheduler that did not answer: the address, the timeout and the
        first cause (distributed's own message names neither the config nor the fix)."""
        reason = connect_failure(error)  # a TLS failure names its own fix
        hint = "" if reason.startswith("TLS error") else (
            "; check that the scheduler is running and reachable from here (a cluster config's "
            "connect_timeout sets how long to wait)"
        )
        return ConfigError(
            f"{self.source}: cannot connect to the Dask scheduler at {self.address} within "
            f"{self.connect_timeout:g} s: {reason}{hint}"
        )

    def cluster_arguments(self) -> tuple[Any, dict[str, Any]]:
        """(cluster class, keyword arguments) of the cluster `start()` creates, without
        creating it: configuration errors surface here, before anything starts."""
        return cluster_arguments(
            self.cluster, self.cluster_kwargs, adapt=self.adapt,
            worker_env=self.worker_env, scheduler_options=self.scheduler_options, source=self.source,
        )

    def __repr__(self) -> str:
        target = self.address or (self.cluster if isinstance(self.cluster, str) else None) or "LocalCluster"
        return f"DaskExecutor({target})"

