"""The cache of a task called outside any flow: looked up before it runs, written after.

DESIGN section 2: outside a flow, a task call runs in this process "with its retries and
cache", as Prefect's does (`my_stateful_task(x=1)` twice sleeps once). The key is the one a
flow run computes for the same call (no upstream futures exist here); a policy's run-wide
parts have nothing to name outside a run (no flow parameters, no run id), as in Prefect.
Driver-side: `Task.__call__` imports it only for a cached call made outside any run.

    value = call_cached(task, args, kwargs, "add_one-1a2b3c", run=lambda store, key: ...)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dagrun.caching import CacheKeyContext, CachePlanner
from dagrun.config import env_flag
from dagrun.results import ResultStore

logger = logging.getLogger("dagrun.runs")


def call_cached(
    task: Any, args: tuple, kwargs: dict, task_run_name: str, run: Callable[[ResultStore, str | None], Any]
) -> Any:
    """The cached value of this call, else `run(store, key)`, which computes and writes it."""
    store = ResultStore.from_env(None)
    planner = CachePlanner(store, f"task {task.name}", refresh_all=env_flag("DAGRUN_REFRESH_CACHE"))
    context = CacheKeyContext(task, task_run_name, None, None, {})
    parts = planner.key_parts(task, task_run_name, args, kwargs, _no_upstream, context, lambda value: value)
    decision = planner.decide(task, task_run_name, parts)
    planner.save_explanations()
    if decision.hit:
        logger.info("Cached '%s' (key %s...)", task.name, parts.key[:12])
        return store.get(parts.key)
    return run(store, parts.key)


def _no_upstream(future: Any) -> str:
    raise TypeError("a task called outside any flow has no upstream futures")  # never reached
