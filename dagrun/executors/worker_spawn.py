"""Dask worker processes that dagrun starts do not re-run the user's script.

Python's `spawn` (and `forkserver`) start methods make each child run the parent's `__main__`
file again, as `__mp_main__`, before it starts. For a script that calls its flow at module
level (no `if __name__ == "__main__":`, as many of Prefect's examples do), every worker
process would run the script's top-level code: its prints appear once per worker, and code
that uses the flow's return value crashes the worker before it starts ("Nanny failed to
start"). Workers never need the script: the functions and classes it defines travel pickled
by value (cloudpickle, and Dask's pickling for anything naming `__main__`).

So, for processes Dask's nanny starts (named `Dask Worker process ...`), the child's
preparation data leaves out the main module. Other processes (a user's own
`multiprocessing.Pool` in a flow body) keep Python's behaviour.
"""

from __future__ import annotations

import multiprocessing.spawn
from typing import Any

_WORKER_PROCESS_PREFIX = "Dask Worker process"
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")


def keep_main_script_out_of_workers() -> None:
    """Install the rule (idempotent): it stays for the process, since a nanny may restart a
    worker at any time while the cluster lives."""
    original = multiprocessing.spawn.get_preparation_data
    if getattr(original, "_dagrun_skips_main", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if str(name).startswith(_WORKER_PROCESS_PREFIX):
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data

    get_preparation_data._dagrun_skips_main = True  # type: ignore[attr-defined]
    multiprocessing.spawn.get_preparation_data = get_preparation_data
