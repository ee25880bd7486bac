"""dagrun: plain Python functions as observable, resilient pipelines on Dask."""

from dagrun.flows import Flow, flow
from dagrun.futures import TaskFuture, unmapped
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
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "task",
    "unmapped",
]
