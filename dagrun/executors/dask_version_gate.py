"""The version check for workers that join after a session started (adaptive scaling from zero,
a Slurm job that starts late, a worker added by hand).

`check_worker_versions` checks the workers present when a session starts; `VersionGate`, a
worker plugin the session registers, checks each worker that joins later. Dask runs a plugin's
`setup` when a worker registers, before the worker reads its first task message, so a worker
whose Python minor version, dagrun or cloudpickle differ from the driver's stops there as if
retired (it starts no task) and publishes one line on `REFUSED_TOPIC`; the session turns that
line into the error of every task still waiting, so the run ends with it.

A worker without dagrun at all cannot load this plugin: it fails to start, with
"No module named 'dagrun'" in its own log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.versions import get_versions

from dagrun.executors.dask_clusters import version_mismatches

REFUSED_TOPIC = "dagrun-refused-worker"


class VersionGate(WorkerPlugin):
    """Let a worker run tasks only if its versions match `expected` (the driver's report from
    `Client.get_versions(packages=["dagrun"])`)."""

    def __init__(self, expected: Mapping[str, Any]) -> None:
        self.expected = dict(expected)

    def setup(self, worker: Any) -> None:
        report = get_versions(packages=["dagrun"])
        problems = version_mismatches({"client": self.expected, "workers": {worker.address: report}})
        if problems:
            # Like a worker being retired: it starts no task, the scheduler sends it none, and
            # (unlike `paused`) its memory monitor never sets it running again.
            worker.status = Status.closing_gracefully
            worker.log_event(REFUSED_TOPIC, {"worker": worker.address, "problem": problems[0]})
