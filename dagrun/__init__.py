"""dagrun: plain Python functions as observable, resilient pipelines on Dask.

The public names load on first use (PEP 562): Python runs this file whenever any `dagrun.*`
module is imported, also on a worker unpickling a task, and a worker must not pay for (or
depend on) the driver's engine, run history and deployments. `from dagrun import flow, task`
works as usual; the engine itself loads when a flow is first called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagrun.flows import Flow, flow
    from dagrun.futures import TaskFuture, allow_failure, unmapped
    from dagrun.logs import get_run_logger
    from dagrun.retry import exponential_backoff
    from dagrun.secrets import Secret
    from dagrun.states import State, StateType
    from dagrun.tasks import Task, task

__version__ = "0.1.0"

__all__ = [
    "Flow",
    "Secret",
    "State",
    "StateType",
    "Task",
    "TaskFuture",
    "allow_failure",
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "task",
    "unmapped",
]

_HOMES = {
    "Flow": "dagrun.flows",
    "Secret": "dagrun.secrets",
    "State": "dagrun.states",
    "StateType": "dagrun.states",
    "Task": "dagrun.tasks",
    "TaskFuture": "dagrun.futures",
    "allow_failure": "dagrun.futures",
    "exponential_backoff": "dagrun.retry",
    "flow": "dagrun.flows",
    "get_run_logger": "dagrun.logs",
    "task": "dagrun.tasks",
    "unmapped": "dagrun.futures",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        from dagrun.prefect_options import missing_name

        raise missing_name(name)  # a Prefect name dagrun lacks says what to use
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
