"""Where and when each task ran, kept on the Dask scheduler until the driver takes it.

`TaskSpans` is a scheduler plugin. A recorded flow run's client signs up with it
(`install_spans`); for each task such a client wants that finishes processing, the plugin
keeps the worker and the start and stop of its compute, under that client. At the end of the
run the driver takes its keys' spans (`take_spans`), and a client that leaves takes the rest
with it. So the scheduler holds only the spans of recorded runs in progress: nothing for
other clients, for runs without history, or for runs that are over.

Dask's own task stream would serve, but it keeps a dict per task (its last 100,000) for every
client, in the scheduler, which for a LocalCluster is the driver's process: the garbage
collector walks them again and again. And it selects records by wall-clock time, not by key.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

Span = tuple[str | None, float, float]
"""(worker address, compute start, compute stop), on the worker's clock."""


class TaskSpans(SchedulerPlugin):
    name = "dagrun-task-spans"

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.spans: dict[str, dict[Any, Span]] = {}  # client id -> key -> span

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or finish not in ("memory", "erred") or not self.spans:
            return
        task = self.scheduler.tasks.get(key)
        wanted_by = task.who_wants if task is not None else None
        for client in wanted_by or ():
            spans = self.spans.get(client.client_key)
            if spans is not None:
                computes = [s for s in kwargs.get("startstops") or () if s.get("action") == "compute"]
                if computes:
                    spans[key] = (kwargs.get("worker"), computes[0]["start"], computes[-1]["stop"])
                return

    def remove_client(self, scheduler: Any, client: str) -> None:
        self.spans.pop(client, None)


def install_spans(dask_scheduler: Any, client: str) -> None:
    """Sign `client` up for spans, adding the plugin unless the scheduler has it (another
    driver's spans stay where they are). Run with `run_on_scheduler`."""
    plugin = dask_scheduler.plugins.get(TaskSpans.name)
    if plugin is None:
        plugin = TaskSpans(dask_scheduler)
        dask_scheduler.add_plugin(plugin)
    plugin.spans.setdefault(client, {})


def take_spans(dask_scheduler: Any, client: str, keys: Iterable[Any]) -> bytes:
    """The spans of `keys` kept for `client`, removed from the plugin (run with
    `run_on_scheduler`).

    Pickled here, `{key: span}`: a result of thousands of small tuples costs the scheduler's
    messaging about 20 us each, one bytes frame costs next to nothing.
    """
    plugin = dask_scheduler.plugins.get(TaskSpans.name)
    kept = plugin.spans.get(client, {}) if plugin is not None else {}
    spans = {}
    for key in keys:
        span = kept.pop(key, None)
        if span is not None:
            spans[key] = span
    return pickle.dumps(spans, protocol=pickle.HIGHEST_PROTOCOL)
