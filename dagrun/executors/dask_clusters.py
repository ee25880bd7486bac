"""Building and checking the Dask clusters dagrun runs on, before anything is submitted.

The default local cluster is tuned for pipelines rather than array maths:
- one worker process per core with 4 threads each, so I/O-bound tasks overlap while
  CPU-bound tasks still use every core;
- `worker-saturation: inf`, so the scheduler sends tasks to workers eagerly instead of
  queueing them (per-task overhead drops several-fold on small tasks);
- scheduler and dashboard bound to 127.0.0.1, and a 60 s worker TTL so a hung worker is
  detected.

Clusters dagrun starts from a class get the same scheduler settings (`MANAGED_CLUSTER_CONFIG`),
and the config's `worker_env` / `scheduler_options` are put where each family of classes takes
them (`managed_cluster_kwargs`). Workers dagrun did not start are checked against the driver's
Python minor version, dagrun and cloudpickle (`check_worker_versions`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import ssl
from collections.abc import Mapping
from typing import Any

import dask
import distributed
import psutil

from dagrun.errors import ConfigError
from dagrun.executors import dask_worker
from dagrun.executors.cluster_checks import check_cluster_kwargs, import_cluster_class, require_cluster_class
from dagrun.executors.worker_spawn import keep_main_script_out_of_workers

THREADS_PER_WORKER = 4
# Set while dagrun starts a cluster: read by a scheduler started in this process, and passed
# on by SSHCluster to the processes it starts. A scheduler in a pod reads environment variables.
MANAGED_CLUSTER_CONFIG = {
    "distributed.scheduler.worker-saturation": float("inf"),
    "distributed.scheduler.worker-ttl": "60s",
}
_KUBERNETES_SCHEDULER_ENV = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "60s"}
_SCHEDULER_OPTIONS_ARGUMENT = {"local": "scheduler_kwargs", "ssh": "scheduler_options", "jobqueue": "scheduler_options"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MATCHED_PACKAGES = ("dagrun", "cloudpickle")  # and the Python minor version


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


def check_worker_versions(client: distributed.Client, source: str) -> dict[str, Any]:
    """Refuse workers that could not run this driver's tasks (pickled by this Python and
    cloudpickle, calling this dagrun), before anything is submitted; return the driver's own
    version report. Workers that join later are checked by `dask_version_gate.VersionGate`."""
    versions = client.get_versions(packages=["dagrun"])
    problems = version_mismatches(versions)
    if problems:
        raise ConfigError(
            f"{source}: the workers of the scheduler at {client.scheduler.address} do not match "
            f"this driver: {'; '.join(problems)}. Install the same Python minor version, dagrun "
            "and cloudpickle on the workers as here (tasks are pickled here and run there); "
            "nothing was submitted"
        )
    return versions["client"]


def check_tls_configured(address: str, source: str) -> None:
    """A tls:// address needs this client's TLS files: from the config's `security` block or
    Dask's own `distributed.comm.tls` settings. Without them, refuse now with the fix, rather
    than let distributed fail inside its connection attempt."""
    if distributed.Security().get_connection_args("client").get("ssl_context") is None:
        raise ConfigError(
            f"{source}: address {address!r} is tls:// but no TLS files are configured for this "
            "client: add a 'security:' block (ca_file, cert, key) to the cluster config, or pass "
            "security=distributed.Security(...)"
        )


def cluster_family(cluster_class: Any) -> str:
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
    family = cluster_family(cluster_class)
    name = getattr(cluster_class, "__qualname__", repr(cluster_class))
    worker_env = dict(worker_env)
    if family == "local" and kwargs.get("processes") is not False:
        # Worker processes ignore Ctrl-C: the driver stops them (see `dask_worker.dask_setup`);
        # they do not re-run the user's script either (see `worker_spawn`).
        keep_main_script_out_of_workers()
        preload = kwargs.get("preload", dask.config.get("distributed.worker.preload"))
        kwargs["preload"] = [*([preload] if isinstance(preload, str) else preload or []), dask_worker.__name__]
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
        for variable, value in worker_env.items():
            if "'" in variable or "'" in value:
                raise ConfigError(
                    f"{source}: worker_env.{variable}: SSHCluster passes worker options inside "
                    "'...' on a shell command line, so they cannot contain a single quote"
                )
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


def cluster_arguments(
    cluster: Any,
    cluster_kwargs: Mapping[str, Any],
    *,
    adapt: Mapping[str, int] | None,
    worker_env: Mapping[str, str],
    scheduler_options: Mapping[str, Any],
    source: str,
) -> tuple[Any, dict[str, Any]]:
    """(cluster class, keyword arguments) of the cluster to start for `cluster` (None: the
    default local cluster; a class; or its dotted name), without starting it: configuration
    errors surface here, before anything starts. Only Dask cluster classes are accepted, and
    `cluster_kwargs` are checked against the types the class states (see `cluster_checks`)."""
    if cluster is None:
        workers, threads = default_cluster_size()
        cluster_class: Any = distributed.LocalCluster
        kwargs = {
            "n_workers": workers,
            "threads_per_worker": threads,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
            **cluster_kwargs,
        }
    elif isinstance(cluster, (type, str)):
        imported = import_cluster_class(cluster, source=source) if isinstance(cluster, str) else cluster
        name = cluster if isinstance(cluster, str) else getattr(cluster, "__qualname__", repr(cluster))
        cluster_class, kwargs = require_cluster_class(imported, name=name, source=source), cluster_kwargs
    else:
        raise ConfigError(f"{source}: the cluster object {cluster!r} is already running")
    check_cluster_kwargs(cluster_class, cluster_kwargs, source=source)
    kwargs = managed_cluster_kwargs(
        cluster_class, kwargs, worker_env=worker_env, scheduler_options=scheduler_options, source=source
    )
    if adapt and isinstance(cluster_class, type) and not callable(getattr(cluster_class, "adapt", None)):
        raise ConfigError(
            f"{source}: adapt: cluster class '{cluster_class.__qualname__}' cannot scale "
            "adaptively (it has no adapt() method); remove 'adapt'"
        )
    return cluster_class, kwargs


def close_worker_processes(cluster: Any, grace: float) -> None:
    """Close the worker processes of a local cluster dagrun started, killing those still busy
    after `grace` seconds (the tasks of a cancelled run): its own close would give each
    worker 4 s. Workers in threads (`processes: false`) and other clusters are left to it."""
    nannies = [worker for worker in getattr(cluster, "workers", {}).values() if isinstance(worker, distributed.Nanny)]
    if not nannies:
        return

    async def close_all() -> None:
        await asyncio.gather(*(nanny.close(timeout=grace) for nanny in nannies), return_exceptions=True)

    pids = [nanny.process.process.pid for nanny in nannies
            if nanny.process is not None and nanny.process.process is not None]
    nanny_logger = logging.getLogger("distributed.nanny")
    level = nanny_logger.level
    nanny_logger.setLevel(logging.ERROR)  # "still alive after 0.4 seconds, killing" is the plan
    try:
        cluster.sync(close_all)
    finally:
        nanny_logger.setLevel(level)
    _reap(pids, timeout=5.0)


def _reap(pids: list[int], timeout: float) -> None:
    """Wait until the killed worker processes are really gone (a loaded machine can take a
    moment), killing any that survived, so the driver never exits before its workers."""
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=timeout)


def connect_failure(exc: BaseException) -> str:
    """Why a connection failed, in one line: the root cause (the TLS alert, a reset, a
    timeout) rather than distributed's wrapper around it."""
    root = exc
    while True:  # tornado keeps the socket's own error in `real_error`, not as the cause
        below = root.__cause__ or getattr(root, "real_error", None) or (
            None if root.__suppress_context__ else root.__context__
        )
        if not isinstance(below, BaseException):
            break
        root = below
    if isinstance(root, ssl.SSLError):
        # With TLS 1.3 the server checks the client's certificate after the client's side of
        # the handshake is done: the client reads either the server's alert or just its close.
        closed = " (the scheduler closed the connection: it may not trust this client's certificate)"
        return (
            f"TLS error: {root}{closed if isinstance(root, ssl.SSLEOFError) else ''}; check ca_file, "
            "cert and key in the cluster config's security block"
        )
    return f"{type(root).__name__}: {root}" if str(root) else type(root).__name__
