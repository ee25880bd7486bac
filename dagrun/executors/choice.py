"""Which executor a top-level flow run uses (driver-side)."""

from __future__ import annotations

from dagrun.config import env_cluster
from dagrun.errors import ConfigError
from dagrun.executors.base import Executor


def resolve_executor(override: Executor | str | None, declared: Executor | str | None) -> Executor:
    """Pick the executor for a top-level flow run.

    Precedence: the caller's override (CLI `--address` / `--cluster`), then `DAGRUN_CLUSTER`,
    then the flow's `executor=`, then a default local Dask cluster. A string is a cluster
    config name or path (`cluster_configs/<name>.yaml`).
    """
    # Imported here, not above: a flow run in-process must not pay for importing `distributed`.
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
