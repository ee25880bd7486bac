"""Prefect decorator options dagrun does not have: one clear line at decoration, not a TypeError.

Prefect 3's `@task` / `@flow` accept options that dagrun leaves out (checked against
`prefect/tasks.py` and `prefect/flows.py`, Prefect 3.9). Code ported from Prefect that passes
one fails where it is decorated, naming the option and what to use instead:

| option                     | on          | what to do in dagrun                                      |
|----------------------------|-------------|-----------------------------------------------------------|
| `result_storage`           | @task       | `@flow(result_storage=...)` (one store per flow run)      |
| `result_storage_key`       | @task       | `cache_key_fn=` (the key of the task's store entry)        |
| `cache_result_in_memory`   | @task @flow | drop it: values stay on the workers until needed          |
| `on_rollback` `on_commit`  | @task       | drop it: dagrun has no transactions yet                    |
| `viz_return_value`         | @task       | drop it: `flow.visualize()` is not available               |
| `asset_deps`               | @task       | drop it: dagrun does not track assets                     |
| `persist_result`           | @flow       | `@task(persist_result=True)` on the tasks whose results matter |
| `result_serializer`        | @flow       | `@task(result_serializer=...)`                            |
| `on_cancellation`          | @flow       | `on_failure=` hooks; Cancelled runs show in the history    |
| `on_crashed`               | @flow       | `on_failure=` hooks (they also run for Crashed)             |

Prefect's top-level names dagrun lacks fail the same way where they are imported (`missing_name`,
called by `dagrun.__getattr__`): `from dagrun import get_client` is an ImportError saying what
to use, not Python's bare "cannot import name" (Prefect's task runners: `dagrun.task_runners`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from dagrun.errors import ConfigError

_TASK_INSTEAD = {
    "result_storage": "set it on the flow: @flow(result_storage=...)",
    "result_storage_key": "use cache_key_fn=... to choose the key of the task's stored result",
    "cache_result_in_memory": "drop it: results stay on the workers until they are needed",
    "on_rollback": "drop it: dagrun has no transactions yet",
    "on_commit": "drop it: dagrun has no transactions yet",
    "viz_return_value": "drop it: dagrun has no flow.visualize()",
    "asset_deps": "drop it: dagrun does not track assets",
}

_FLOW_INSTEAD = {
    "persist_result": "set @task(persist_result=True) on the tasks whose results should be stored",
    "result_serializer": "set @task(result_serializer=...) on the tasks",
    "cache_result_in_memory": "drop it: results stay on the workers until they are needed",
    "on_cancellation": "use on_failure=... hooks; Cancelled runs are in `dagrun runs ls`",
    "on_crashed": "use on_failure=... hooks (they also run when a flow run crashes)",
}


def reject_options(kind: str, name: str, given: Mapping[str, Any], supported: Iterable[str]) -> None:
    """Raise one `ConfigError` line for the first option in `given` that `@kind` lacks."""
    if not given:
        return
    option = sorted(given)[0]
    table = _TASK_INSTEAD if kind == "task" else _FLOW_INSTEAD
    where = f"@{kind} '{name}'"
    if option in table:
        raise ConfigError(f"{where}: Prefect's option '{option}' is not supported by dagrun; {table[option]}")
    close = difflib.get_close_matches(option, list(supported), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"dagrun's options are: {', '.join(sorted(supported))}"
    raise ConfigError(f"{where}: unknown option '{option}'; {hint}")


_TOP_LEVEL = {
    "get_client": "there is no API server client; read runs with `dagrun runs ls --json` or from "
    "`dagrun server`'s /api/runs",
    "deploy": "there are no work pools; declare my_flow.deployment(...) and run `dagrun serve FILE`",
}


def missing_name(name: str) -> Exception:
    """What `dagrun.__getattr__(name)` raises: for a Prefect name dagrun lacks, an ImportError
    saying what to use (`from dagrun import ...` shows its message; an AttributeError would be
    replaced by "cannot import name"); otherwise the usual AttributeError."""
    if name in _TOP_LEVEL:
        return ImportError(f"dagrun has no {name}: {_TOP_LEVEL[name]}", name="dagrun")
    return AttributeError(f"module 'dagrun' has no attribute {name!r}")
