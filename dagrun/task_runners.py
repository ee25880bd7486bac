"""Prefect's task runners, mapped onto dagrun's executors: `@flow(task_runner=...)`.

| Prefect (and prefect_dask)                                  | dagrun executor                     |
|-------------------------------------------------------------|-------------------------------------|
| `ThreadPoolTaskRunner(max_workers=None)`                    | `ThreadExecutor(max_workers)`        |
| `DaskTaskRunner()`                                          | `DaskExecutor()` (a LocalCluster)    |
| `DaskTaskRunner(address="tcp://...")`                       | `DaskExecutor(address=...)`          |
| `DaskTaskRunner(cluster_class=X, cluster_kwargs=K, adapt_kwargs=A)` | `DaskExecutor(cluster=X, cluster_kwargs=K, adapt=A)` |
| `DaskTaskRunner(cluster=<running cluster>)`                 | `DaskExecutor(cluster=<it>)`         |

Decorating builds nothing: the executor is made when a flow run starts (`to_executor()`), so
importing a module of flows loads no Dask. This module imports only `errors`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagrun.errors import ConfigError

__all__ = ["DaskTaskRunner", "ThreadPoolTaskRunner"]


@dataclass(frozen=True, slots=True)
class ThreadPoolTaskRunner:
    """Prefect's thread pool: tasks run concurrently in the driver's threads, no cluster."""

    max_workers: int | None = None

    def __post_init__(self) -> None:
        if self.max_workers is not None and (
            not isinstance(self.max_workers, int) or isinstance(self.max_workers, bool) or self.max_workers < 1
        ):
            raise ConfigError(f"ThreadPoolTaskRunner(max_workers=...) needs an int >= 1, got {self.max_workers!r}")

    def to_executor(self) -> Any:
        return _executor_class("ThreadExecutor")(max_workers=self.max_workers)


@dataclass(frozen=True, slots=True, init=False)
class DaskTaskRunner:
    """prefect_dask's `DaskTaskRunner`: a local cluster by default, or the cluster described."""

    address: str | None
    cluster: Any
    cluster_class: str | type | None
    cluster_kwargs: Mapping[str, Any] | None
    adapt_kwargs: Mapping[str, int] | None

    def __init__(
        self,
        cluster: Any = None,
        address: str | None = None,
        cluster_class: str | type | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        adapt_kwargs: Mapping[str, int] | None = None,
        **unsupported: Any,
    ) -> None:
        if unsupported:
            option = sorted(unsupported)[0]
            raise ConfigError(
                f"DaskTaskRunner: option '{option}' is not supported by dagrun; dagrun makes its own "
                "Dask client (give address=, cluster= or cluster_class= / cluster_kwargs= / adapt_kwargs=)"
            )
        if cluster is not None and cluster_class is not None:
            raise ConfigError("DaskTaskRunner: give either cluster= (a running cluster) or cluster_class=, not both")
        for name, value in (("address", address), ("cluster_class", cluster_class)):
            if value is not None and not isinstance(value, (str, type)):
                wanted = "a str" if name == "address" else "a class or a dotted path"
                raise ConfigError(f"DaskTaskRunner: {name}= needs {wanted}, got {value!r}")
        object.__setattr__(self, "cluster", cluster)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "cluster_class", cluster_class)
        object.__setattr__(self, "cluster_kwargs", dict(cluster_kwargs) if cluster_kwargs else None)
        object.__setattr__(self, "adapt_kwargs", dict(adapt_kwargs) if adapt_kwargs else None)

    def to_executor(self) -> Any:
        return _executor_class("DaskExecutor")(
            address=self.address,
            cluster=self.cluster if self.cluster is not None else self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            adapt=self.adapt_kwargs,
            source="DaskTaskRunner(...)",
        )


def executor_for(flow_name: str, executor: Any, task_runner: Any) -> Any:
    """What `@flow(executor=..., task_runner=...)` runs on (the runner made into an executor
    only when a run starts: see `resolve_executor`)."""
    if task_runner is None:
        return executor
    if executor is not None:
        raise ConfigError(f"@flow '{flow_name}': give either executor= or task_runner=, not both")
    if not hasattr(task_runner, "to_executor"):
        raise ConfigError(
            f"@flow '{flow_name}': task_runner= needs ThreadPoolTaskRunner(...) or DaskTaskRunner(...) "
            f"from dagrun.task_runners, got {task_runner!r}"
        )
    return task_runner


def _executor_class(name: str) -> Any:
    return getattr(importlib.import_module("dagrun.executors"), name)


_PREFECT_ONLY = {
    "ProcessPoolTaskRunner": "use DaskTaskRunner() (a LocalCluster of worker processes)",
    "PrefectTaskRunner": "use DaskTaskRunner(address=...) to run tasks on other machines",
    "ConcurrentTaskRunner": "use ThreadPoolTaskRunner (its Prefect 3 name)",
    "SequentialTaskRunner": "use @flow(executor=InProcessExecutor()) from dagrun.executors",
}


def __getattr__(name: str) -> Any:
    if name in _PREFECT_ONLY:
        # An ImportError (not AttributeError) keeps this line in `from ... import` errors.
        raise ImportError(f"dagrun.task_runners has no {name}: {_PREFECT_ONLY[name]}")
    raise AttributeError(f"module 'dagrun.task_runners' has no attribute {name!r}")
