"""Which executor a top-level flow run uses (driver-side)."""

from __future__ import annotations

from dagrun.config import env_cluster, env_executor
from dagrun.errors import ConfigError
from dagrun.executors.base import Executor


def resolve_executor(override: Executor | str | None, declared: Executor | str | None) -> Executor:
    """Pick the executor for a top-level flow run.

    Precedence: the caller's override (CLI `--address` / `--cluster`), then `DAGRUN_CLUSTER`
    or `DAGRUN_EXECUTOR` (not both), then the flow's `executor=` / `task_runner=`, then a
    default local Dask cluster. A string is a cluster config name or path
    (`cluster_configs/<name>.yaml`). `DAGRUN_EXECUTOR` switches code that names no executor
    (Prefect's examples, say) to another one without editing it.
    """
    # Imported here, not above: a flow run in-process must not pay for importing `distributed`.
    from dagrun.executors.dask import DaskExecutor

    for choice in (override, _from_environment(), declared):
        if choice is None:
            continue
        if hasattr(choice, "to_executor"):  # a Prefect-style task runner (dagrun.task_runners)
            choice = choice.to_executor()
        if isinstance(choice, Executor):
            return choice
        if isinstance(choice, str):
            return DaskExecutor.from_config(choice)
        raise ConfigError(
            f"executor must be an Executor (DaskExecutor(...), ThreadExecutor(), InProcessExecutor()) or a cluster "
            f"config name, got {choice!r}"
        )
    return DaskExecutor()


def _from_environment() -> Executor | str | None:
    """`DAGRUN_CLUSTER` (a cluster config) or `DAGRUN_EXECUTOR` (an executor kind)."""
    cluster, kind = env_cluster(), env_executor()
    if kind is None:
        return cluster
    if cluster is not None:
        raise ConfigError(
            f"DAGRUN_EXECUTOR={kind} and DAGRUN_CLUSTER={cluster} are both set: unset one "
            "(DAGRUN_CLUSTER already means a Dask cluster)"
        )
    if kind not in _EXECUTOR_KINDS:
        raise ConfigError(f"DAGRUN_EXECUTOR={kind} is not an executor: use one of {', '.join(_EXECUTOR_KINDS)}")
    from dagrun import executors

    return getattr(executors, _EXECUTOR_KINDS[kind])()


# `DAGRUN_EXECUTOR` values -> the executor class each builds with its defaults.
_EXECUTOR_KINDS = {"threads": "ThreadExecutor", "in-process": "InProcessExecutor", "dask": "DaskExecutor"}
