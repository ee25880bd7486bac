"""The version check for workers that join after a session started (adaptive scaling from zero,
a Slurm job that starts late, a worker added by hand).

`check_worker_versions` checks the workers present when a session starts; `VersionGate`, a
worker plugin the session installs on the scheduler, checks each worker that joins later. Dask runs a plugin's
`setup` when a worker registers, before the worker reads its first task message, so a worker
whose Python minor version, dagrun or cloudpickle differ from the driver's stops there as if
retired (it starts no task) and publishes one line on `REFUSED_TOPIC`; the session turns that
line into the error of every task still waiting, so the run ends with it.

A worker without dagrun at all cannot load this plugin: it fails to start, with
"No module named 'dagrun'" in its own log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.versions import get_package_info

from dagrun.errors import ConfigError
from dagrun.executors.dask_clusters import version_mismatches

REFUSED_TOPIC = "dagrun-refused-worker"


class VersionGate(WorkerPlugin):
    """Let a worker run tasks only if its versions match `expected` (the driver's report from
    `Client.get_versions(packages=["dagrun"])`)."""

    def __init__(self, expected: Mapping[str, Any]) -> None:
        self.expected = dict(expected)

    async def setup(self, worker: Any) -> None:
        # Off the worker's event loop: reading package metadata takes tens of ms.
        report = await asyncio.to_thread(_own_versions)
        problems = version_mismatches({"client": self.expected, "workers": {worker.address: report}})
        if problems:
            # Like a worker being retired: it starts no task, the scheduler sends it none, and
            # (unlike `paused`) its memory monitor never sets it running again.
            worker.status = Status.closing_gracefully
            worker.log_event(REFUSED_TOPIC, {"worker": worker.address, "problem": problems[0]})


def fail_waiting_tasks(client: Any, source: str, refusal: Mapping[str, str]) -> None:
    """End the run on a refused worker: every task of `client` still waiting fails with a
    ConfigError naming the worker (run on the client's event loop, for each refusal)."""
    message = (
        f"{source}: {refusal['problem']}; it was given no tasks. Install the same Python minor "
        "version, dagrun and cloudpickle on the workers as here (tasks are pickled here and run there)"
    )
    for state in list(client.futures.values()):
        if state.status == "pending":
            state.set_error(ConfigError(message), None)  # one each: the engine adds notes to it


def install_gate(dask_scheduler: Any, name: str, plugin: bytes) -> None:
    """Give the pickled `VersionGate` to workers that register from now on (run with
    `run_on_scheduler`). Not `Client.register_plugin`: that also runs it on the workers already
    checked, and a worker busy reading package metadata misjudges its clock offset."""
    dask_scheduler.worker_plugins[name] = plugin


def remove_gate(dask_scheduler: Any, name: str) -> None:
    dask_scheduler.worker_plugins.pop(name, None)


def _own_versions() -> dict[str, Any]:
    """This process's versions of what `version_mismatches` compares (Dask's full report would
    also run `uname` in a subprocess)."""
    return {"packages": get_package_info(["dagrun", "cloudpickle"])}
