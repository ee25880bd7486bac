"""Where tasks run: `DaskExecutor` (local or remote Dask cluster) and `InProcessExecutor`.

| module             | what it holds                                                        |
|--------------------|----------------------------------------------------------------------|
| `base.py`          | the `Executor` / `ExecutorSession` seam the engine talks to          |
| `local.py`         | `InProcessExecutor`: task calls run in the driver's process          |
| `dask.py`          | `DaskExecutor` and its session: the driver's side of Dask            |
| `dask_worker.py`   | what runs on Dask workers (imported there: no driver-side code)      |
| `dask_logs.py`     | log lines from workers to the driver, in batches                     |
| `dask_events.py`   | task events from workers to the driver, in batches (worker side)     |
| `dask_event_receiver.py` | the driver's end: worker clocks measured, times converted     |
| `dask_clusters.py` | building the clusters dagrun starts, checking those it attaches to   |

`DaskExecutor` is imported on first use, so code that only needs the in-process executor
does not pay for importing `distributed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagrun.config import env_cluster
from dagrun.errors import ConfigError
from dagrun.executors.base import Executor, ExecutorSession
from dagrun.executors.local import InProcessExecutor

if TYPE_CHECKING:
    from dagrun.executors.dask import DaskExecutor

__all__ = ["DaskExecutor", "Executor", "ExecutorSession", "InProcessExecutor", "resolve_executor"]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":
        from dagrun.executors.dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module 'dagrun.executors' has no attribute {name!r}")


def resolve_executor(override: Executor | str | None, declared: Executor | str | None) -> Executor:
    """Pick the executor for a top-level flow run.

    Precedence: the caller's override (CLI `--address` / `--cluster`), then `DAGRUN_CLUSTER`,
    then the flow's `executor=`, then a default local Dask cluster. A string is a cluster
    config name or path (`cluster_configs/<name>.yaml`).
    """
    from dagrun.executors.dask import DaskExecutor

    for choice in (override, env_cluster(), declared):
        if choice is None:
            continue
        if isinstance(choice, Executor):
            return choice
        if isinstance(choice, str):
            return DaskExecutor.from_config(choice)
        raise ConfigError(
            f"executor must be an Executor (DaskExecutor(...), InProcessExecutor()) or a cluster "
            f"config name, got {choice!r}"
        )
    return DaskExecutor()
