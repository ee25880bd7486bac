"""Where tasks run: `DaskExecutor` (local or remote Dask cluster), `InProcessExecutor`, `ThreadExecutor`.

| module             | what it holds                                                        |
|--------------------|----------------------------------------------------------------------|
| `base.py`          | the `Executor` / `ExecutorSession` seam the engine talks to          |
| `choice.py`        | `resolve_executor`: which executor a top-level flow run uses         |
| `local.py`         | `InProcessExecutor`: task calls run in the driver's process          |
| `threads.py`       | `ThreadExecutor`: task calls run concurrently in the driver's threads |
| `dask.py`          | `DaskExecutor` and its session: the driver's side of Dask            |
| `dask_worker.py`   | what runs on Dask workers (imported there: no driver-side code)      |
| `dask_logs.py`     | worker log lines travelling to the driver in batches                 |
| `dask_events.py`   | task events travelling to the driver in batches (worker side)        |
| `dask_event_receiver.py` | the driver's end of them: worker clocks measured, times converted |
| `dask_clusters.py` | building the clusters dagrun starts, checking those it attaches to   |
| `dask_deaths.py`   | a scheduler plugin: a worker's death fails dagrun's task at once     |

Every name here loads on first use (PEP 562): a Dask worker imports this package on its way
to `dask_worker`, and must load none of the driver's side; code that only needs the
in-process executor does not pay for importing `distributed`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagrun.executors.base import Executor, ExecutorSession
    from dagrun.executors.choice import resolve_executor
    from dagrun.executors.dask import DaskExecutor
    from dagrun.executors.local import InProcessExecutor
    from dagrun.executors.threads import ThreadExecutor

__all__ = ["DaskExecutor", "Executor", "ExecutorSession", "InProcessExecutor", "ThreadExecutor", "resolve_executor"]

_HOMES = {
    "DaskExecutor": "dagrun.executors.dask",
    "Executor": "dagrun.executors.base",
    "ExecutorSession": "dagrun.executors.base",
    "InProcessExecutor": "dagrun.executors.local",
    "ThreadExecutor": "dagrun.executors.threads",
    "resolve_executor": "dagrun.executors.choice",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dagrun.executors' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
