"""Where and when each task ran, kept on the Dask scheduler until the driver takes it.

`TaskSpans` is a scheduler plugin, installed when a recorded flow run starts. For each task
that finishes processing it keeps the worker and the start and stop of its compute; at the
end of the run the driver calls `take_spans` with the run's keys, which hands their spans
over and forgets them. So a long-lived cluster holds only the spans nobody has taken, at most
`MAX_SPANS`, oldest dropped first.

Dask's own task stream would serve, but it keeps a dict per task (its last 100,000) in the
scheduler, which for a LocalCluster is the driver process, where the garbage collector walks
them again and again; and it selects records by wall-clock time, not by key.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

MAX_SPANS = 100_000
"""Spans kept for tasks whose run has not taken them (runs not recorded, other clients)."""

Span = tuple[str | None, float, float]
"""(worker address, compute start, compute stop), on the worker's clock."""


class TaskSpans(SchedulerPlugin):
    name = "dagrun-task-spans"

    def __init__(self) -> None:
        self.spans: OrderedDict[Any, Span] = OrderedDict()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or finish not in ("memory", "erred"):
            return
        computes = [s for s in kwargs.get("startstops") or () if s.get("action") == "compute"]
        if computes:
            if len(self.spans) >= MAX_SPANS:
                self.spans.popitem(last=False)
            self.spans[key] = (kwargs.get("worker"), computes[0]["start"], computes[-1]["stop"])


def install_spans(dask_scheduler: Any) -> None:
    """Add the plugin unless the scheduler has it: another driver's spans stay where they are
    (run with `run_on_scheduler`)."""
    if TaskSpans.name not in dask_scheduler.plugins:
        dask_scheduler.add_plugin(TaskSpans())


def take_spans(dask_scheduler: Any, keys: Iterable[Any]) -> bytes:
    """The spans of `keys` that the plugin holds, removed from it (run with `run_on_scheduler`).

    Pickled here, `{key: span}`: a result of thousands of small tuples costs the scheduler's
    messaging about 20 us each, one bytes frame costs next to nothing.
    """
    plugin = dask_scheduler.plugins.get(TaskSpans.name)
    spans = {}
    for key in keys if plugin is not None else ():
        span = plugin.spans.pop(key, None)
        if span is not None:
            spans[key] = span
    return pickle.dumps(spans, protocol=pickle.HIGHEST_PROTOCOL)
