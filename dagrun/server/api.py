"""The JSON API over the run history, one handler per route.

| route                              | answers                                                  |
|------------------------------------|----------------------------------------------------------|
| `GET /api/runs`                    | flow runs, newest first (as `dagrun runs ls --json`; a    |
|                                    | parameter over 1 KB is listed as its summary)            |
| `GET /api/runs/{id}`               | one flow run with its task runs (as `runs show ID --json`)|
| `GET /api/runs/{id}/logs`          | `{"logs": [...], "next_after_id": n, "more": bool,       |
|                                    | "run_ended": bool}` for polling                          |
| `POST /api/runs/{id}/cancel`       | asks the run's driver to cancel it                       |
| `GET /api/task-runs/{id}`          | one task run with its attempts, state history and the    |
|                                    | names and states of its upstream runs                    |
| `GET /api/flows`                   | per flow: statistics plus its recent runs for the chart  |

Ids may be unique prefixes, as on the command line. Unknown ids are 404, bad query values 400,
a damaged database 500, each as `{"error": "..."}`. `HistoryStore` is synchronous (sqlite3 or
psycopg), so every call runs on the application's thread pool: a slow query never stalls the
other pages' polling.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any, Literal, TypeVar

from tornado.ioloop import IOLoop
from tornado.web import HTTPError

from dagrun.errors import ConfigError, HistoryDamagedError
from dagrun.history import HistoryStore
from dagrun.history.events import FINAL_STATE_NAMES
from dagrun.history.parameters import capped_parameters
from dagrun.server.auth import GuardedHandler

T = TypeVar("T")

RUNS_LIMIT = (100, 1000)
"""Default and largest `limit` of `GET /api/runs`."""
LISTED_PARAMETER_BYTES = 1024
"""Largest parameter `GET /api/runs` shows whole; a larger one is listed as its summary (type,
size, hash), so a page stays small. `GET /api/runs/{id}` has the parameter as stored."""
LOGS_LIMIT = (1000, 10000)
"""Default and largest `limit` of `GET /api/runs/{id}/logs`."""
FLOW_CHART_RUNS = 60
"""How many recent runs of each flow `GET /api/flows` returns for its chart."""


class ApiError(HTTPError):
    """An answer other than 200, with the one-line message the client shows.

    An `HTTPError` without a log message, so tornado answers with its status and does not
    log it as a server fault.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


class JSONHandler(GuardedHandler):
    """Shared plumbing: the store, its thread pool, JSON answers and JSON errors."""

    @property
    def store(self) -> HistoryStore:
        store: HistoryStore = self.settings["dagrun_store"]
        return store

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store method on the thread pool; a `ConfigError` from it is a 400, a damaged
        database a 500 saying what to do."""
        executor: Executor = self.settings["dagrun_executor"]
        try:
            return await IOLoop.current().run_in_executor(
                executor, partial(function, *args, **kwargs)
            )
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from exc
        except HistoryDamagedError as exc:
            raise ApiError(500, str(exc)) from exc

    async def resolve(self, prefix: str, kind: Literal["flow_run", "task_run"]) -> str:
        """The full id for an id or unique prefix; 404 when nothing matches."""
        run_id = await self.call(self.store.resolve_id, prefix, kind=kind)
        if run_id is None:
            raise ApiError(404, f"No {kind.replace('_', ' ')} with id {prefix!r}")
        return run_id

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        # default=str: parameters come from user code and may hold anything the store kept.
        self.finish(json.dumps(value, default=str, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.message if isinstance(exc, ApiError) else self._reason
        self.write_json({"error": message}, status_code)

    def int_argument(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        """An integer query argument within [low, high]; 400 otherwise."""
        text = self.get_query_argument(name, None)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer, not {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ApiError(400, f"{name} must be {bounds}, not {value}")
        return value


class RunsHandler(JSONHandler):
    """`GET /api/runs?flow=&state=&limit=&q=&since=`: flow runs, newest first.

    `q` keeps runs whose id starts with it (or whose run name contains it); `since` (epoch
    seconds) keeps runs started at or after it.
    """

    async def get(self) -> None:
        flow = self.get_query_argument("flow", None) or None
        state = self.get_query_argument("state", None) or None
        query = (self.get_query_argument("q", None) or "").strip()
        limit = self.int_argument("limit", RUNS_LIMIT[0], low=1, high=RUNS_LIMIT[1])
        since_text = self.get_query_argument("since", None)
        try:
            since = float(since_text) if since_text else None
        except ValueError:
            raise ApiError(400, f"since must be epoch seconds, not {since_text!r}") from None
        # A search or a time window filters here, so it reads past `limit` to fill the page.
        filtered = bool(query) or since is not None
        runs = await self.call(
            self.store.list_flow_runs,
            flow_name=flow,
            state=state,
            limit=None if filtered else limit,
        )
        if since is not None:
            runs = [run for run in runs if (run["start_time"] or 0) >= since]
        if query:
            runs = [
                run
                for run in runs
                if run["id"].startswith(query) or query in (run["flow_run_name"] or "")
            ]
        page = runs[:limit]
        for run in page:
            if isinstance(run.get("parameters"), dict):
                run["parameters"] = capped_parameters(run["parameters"], LISTED_PARAMETER_BYTES)
        self.write_json(page)


class RunHandler(JSONHandler):
    """`GET /api/runs/{id}`: the flow run with its task runs, subflow runs and states."""

    async def get(self, prefix: str) -> None:
        run_id = await self.resolve(prefix, "flow_run")
        run = await self.call(self.store.get_flow_run, run_id)
        if run is None:  # deleted between the two reads
            raise ApiError(404, f"No flow run with id {prefix!r}")
        self.write_json(run)


class RunLogsHandler(JSONHandler):
    """`GET /api/runs/{id}/logs?task=&level=&after_id=&limit=`.

    `level` is a minimum, by name (WARNING) or number (30). `next_after_id` is the id of the
    last line read (filtered out or not): pass it as `after_id` to poll for newer lines.
    `more` says the page was full and the next poll should come at once; `run_ended` that
    the run is over, so once a page has neither, there is nothing more to poll for.
    """

    async def get(self, prefix: str) -> None:
        run_id = await self.resolve(prefix, "flow_run")
        task = self.get_query_argument("task", None) or None
        after_id = self.int_argument("after_id", 0, low=0)
        limit = self.int_argument("limit", LOGS_LIMIT[0], low=1, high=LOGS_LIMIT[1])
        level = _log_level(self.get_query_argument("level", None))
        # Read before the lines: a run's last lines are written before its final state, so
        # once `run_ended` is true these lines (and the pages `more` asks for) are the last.
        state = await self.call(self.store.flow_run_state, run_id)
        lines = await self.call(
            self.store.get_logs, run_id, task_name=task, after_id=after_id, limit=limit
        )
        next_after_id = lines[-1]["id"] if lines else after_id
        more = len(lines) >= limit
        if level:
            lines = [line for line in lines if line["level"] >= level]
        run_ended = state in FINAL_STATE_NAMES
        self.write_json(
            {"logs": lines, "next_after_id": next_after_id, "more": more, "run_ended": run_ended}
        )


class CancelHandler(JSONHandler):
    """`POST /api/runs/{id}/cancel`: 200 when the request was recorded, 409 when the run is over."""

    async def post(self, prefix: str) -> None:
        run_id = await self.resolve(prefix, "flow_run")
        if not await self.call(self.store.request_cancel, run_id):
            raise ApiError(409, f"Flow run {run_id} has already finished")
        self.write_json({"id": run_id, "cancel_requested": True})


class TaskRunHandler(JSONHandler):
    """`GET /api/task-runs/{id}`: one task run with `attempt_history` and `state_history`."""

    async def get(self, prefix: str) -> None:
        task_run_id = await self.resolve(prefix, "task_run")
        task_run = await self.call(self.store.get_task_run, task_run_id)
        if task_run is None:
            raise ApiError(404, f"No task run with id {prefix!r}")
        self.write_json(task_run)


class FlowsHandler(JSONHandler):
    """`GET /api/flows`: `flow_stats()` per flow plus `recent_runs`, oldest first.

    Each recent run is `{id, state, start_time, duration}`; an unfinished run's duration
    is how long it has run so far, so the chart shows it growing.
    """

    async def get(self) -> None:
        stats = await self.call(self.store.flow_stats)
        for flow in stats:
            runs = await self.call(
                self.store.list_flow_runs, flow_name=flow["flow_name"], limit=FLOW_CHART_RUNS
            )
            flow["recent_runs"] = [_chart_point(run) for run in reversed(runs)]
        self.write_json(stats)


class NotFoundHandler(JSONHandler):
    """Any other `/api/` path: a JSON 404 rather than tornado's HTML page."""

    def get(self, *args: str) -> None:
        raise ApiError(404, f"No API route {self.request.path}")

    post = get


def _chart_point(run: dict[str, Any]) -> dict[str, Any]:
    duration = run["duration"]
    if duration is None and run["start_time"] is not None and run["state"] not in FINAL_STATE_NAMES:
        duration = max(0.0, time.time() - run["start_time"])
    return {
        "id": run["id"],
        "state": run["state"],
        "start_time": run["start_time"],
        "duration": duration,
    }


def _log_level(text: str | None) -> int:
    """A minimum log level from a name or number; 0 (everything) when not given."""
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise ApiError(400, f"Unknown log level {text!r}; expected DEBUG, INFO, WARNING or ERROR")
    return level
