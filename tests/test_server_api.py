"""The dashboard's JSON API, pages and access checks, against a real tornado server.

The server listens on 127.0.0.1 on a random port, in this process (on its own thread and
event loop) or as the real `dagrun server` (the console script), over a real SQLite file.
The history comes from `recorded_history`, the one place that makes it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from console_script import DAGRUN, running_server
from dagrun.history import (
    FlowRunStarted,
    FlowRunState,
    HistoryStore,
    LogLine,
    TaskRunAttempt,
    TaskRunCreated,
    TaskRunState,
)
from dagrun.server import make_app
from dagrun.server.auth import SESSION_COOKIE

TOKEN = "test-token-5f1e"
WORKER = "tcp://127.0.0.1:40001"


@dataclass(frozen=True)
class History:
    """The ids of the runs `recorded_history` made."""

    failed: str
    completed: str
    running: str
    report: str
    extract: str
    transform: str
    load: str
    lookup: str


def new_id() -> str:
    return uuid.uuid4().hex


def started(flow_run_id: str, flow_name: str, start: float, **parameters: Any) -> FlowRunStarted:
    return FlowRunStarted(
        flow_run_id=flow_run_id, flow_name=flow_name,
        flow_run_name=f"{flow_name}-{flow_run_id[:6]}", parameters=parameters,
        start_time=start, parent_flow_run_id=None, parent_task_run_id=None,
        executor="DaskExecutor", address="tcp://127.0.0.1:8786", host="driver-host", pid=4242,
        lease_seconds=3600.0,
    )


def task(task_run_id: str, flow_run_id: str, name: str, created: float, *upstream: str,
         cache_key: str | None = None) -> TaskRunCreated:
    return TaskRunCreated(task_run_id, flow_run_id, name, f"{name}-0", tuple(upstream), cache_key,
                          created)


def record_history(store: HistoryStore) -> History:
    """Record a small history: a failed etl run (a retried task that failed, one NotRun, one
    cache hit), a completed etl run, a running etl run, and a completed report run.

    The one place the tests' history is made: when the engine records real runs, this can
    run real flows instead and return their ids.
    """
    now = time.time()
    ids = History(failed=new_id(), completed=new_id(), running=new_id(), report=new_id(),
                  extract=new_id(), transform=new_id(), load=new_id(), lookup=new_id())
    t0 = now - 600
    run = ids.failed
    traceback = ('Traceback (most recent call last):\n  File "etl.py", line 12, in transform\n'
                 '    raise ValueError("bad row 42")\nValueError: bad row 42')
    store.apply([
        started(ids.completed, "etl", now - 1200, day="2026-11-24"),
        FlowRunState(ids.completed, "Completed", now - 1188),
        started(ids.report, "report", now - 900, pages=3),
        FlowRunState(ids.report, "Completed", now - 897),
        started(run, "etl", t0, day="2026-11-25"),
        task(ids.extract, run, "extract", t0 + 0.1, cache_key="1a2b3c4d5e6f7a8b"),
        task(ids.lookup, run, "lookup", t0 + 0.1, cache_key="3f9a1c0d2e4b5a69"),
        task(ids.transform, run, "transform", t0 + 0.2, ids.extract, ids.lookup),
        task(ids.load, run, "load", t0 + 0.3, ids.transform),
        TaskRunState(ids.lookup, "Cached", t0 + 0.15, cache_hit=True, start_time=t0 + 0.15,
                     end_time=t0 + 0.15, result_size=512),
        TaskRunState(ids.extract, "Running", t0 + 0.2, attempt=1, worker=WORKER),
        TaskRunAttempt(ids.extract, 1, t0 + 0.2, t0 + 1.2),
        TaskRunState(ids.extract, "Completed", t0 + 1.2, cache_hit=False, result_size=2048),
        LogLine(run, ids.extract, t0 + 1.0, 20, "dagrun.task", "Extracted 10 rows"),
        TaskRunState(ids.transform, "Running", t0 + 1.3, attempt=1, worker=WORKER),
        TaskRunAttempt(ids.transform, 1, t0 + 1.3, t0 + 1.8, "ConnectionError: reset by peer",
                       "Traceback ...\nConnectionError: reset by peer"),
        TaskRunState(ids.transform, "Retrying", t0 + 1.8,
                     message="Retry 1/1 of 'transform' in 0.5 s after ConnectionError"),
        LogLine(run, ids.transform, t0 + 1.8, 30, "dagrun.task",
                "Retry 1/1 of 'transform' in 0.5 s after ConnectionError: reset by peer"),
        TaskRunState(ids.transform, "Running", t0 + 2.3, attempt=2, worker=WORKER),
        TaskRunAttempt(ids.transform, 2, t0 + 2.3, t0 + 2.9, "ValueError: bad row 42", traceback),
        TaskRunState(ids.transform, "Failed", t0 + 2.9, error="ValueError: bad row 42",
                     traceback=traceback),
        LogLine(run, ids.transform, t0 + 2.9, 40, "dagrun.task",
                "Task 'transform' failed: ValueError: bad row 42"),
        TaskRunState(ids.load, "NotRun", t0 + 2.95,
                     message="did not run because transform failed"),
        LogLine(run, None, t0 + 3.0, 40, "dagrun.flow", "Flow run 'etl' failed"),
        FlowRunState(run, "Failed", t0 + 3.0, error="ValueError: bad row 42", traceback=traceback),
        started(ids.running, "etl", now - 5, day="2026-11-26"),
    ])
    return ids


class ServerThread:
    """`app` served on 127.0.0.1 (random port) by its own event loop on a daemon thread."""

    def __init__(self, app: tornado.web.Application) -> None:
        self.app = app
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            sockets = bind_sockets(0, address="127.0.0.1")
            self.port = sockets[0].getsockname()[1]
            server = HTTPServer(self.app)
            server.add_sockets(sockets)
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            server.stop()
            await server.close_all_connections()

        asyncio.run(main())

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.app.settings["dagrun_executor"].shutdown()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, *, headers: dict[str, str] | None = None,
            host: str = "127.0.0.1") -> Response:
    """One HTTP request to 127.0.0.1:`port` (`host` only sets the Host header)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        all_headers = {"Host": f"{host}:{port}", **(headers or {})}
        body = b"{}" if method == "POST" else None
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


@pytest.fixture
def history_store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(tmp_path / "history.db") as store:
        yield store


@pytest.fixture
def recorded_history(history_store: HistoryStore) -> History:
    return record_history(history_store)


@pytest.fixture
def server(history_store: HistoryStore, recorded_history: History) -> Iterator[ServerThread]:
    with ServerThread(make_app(history_store)) as running:
        yield running


@pytest.fixture
def token_server(history_store: HistoryStore, recorded_history: History) -> Iterator[ServerThread]:
    with ServerThread(make_app(history_store, token=TOKEN)) as running:
        yield running


def get(server: ServerThread, path: str, **kwargs: Any) -> Response:
    return request(server.port, "GET", path, **kwargs)


# --- runs ---

def test_runs_lists_flow_runs_newest_first_with_the_cli_fields(server: ServerThread,
                                                               recorded_history: History) -> None:
    response = get(server, "/api/runs")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    runs = response.json()
    assert [run["id"] for run in runs] == [recorded_history.running, recorded_history.failed,
                                           recorded_history.report, recorded_history.completed]
    for run in runs:
        assert {"id", "flow_name", "state", "start_time", "end_time", "parameters"} <= set(run)
    failed = runs[1]
    assert failed["flow_name"] == "etl"
    assert failed["state"] == "Failed"
    assert failed["parameters"] == {"day": "2026-11-25"}
    assert failed["end_time"] - failed["start_time"] == pytest.approx(3.0)
    assert runs[0]["state"] == "Running" and runs[0]["end_time"] is None


def test_runs_filter_by_flow_state_limit_time_and_id_prefix(server: ServerThread,
                                                            recorded_history: History) -> None:
    def ids(query: str) -> list[str]:
        response = get(server, f"/api/runs?{query}")
        assert response.status == 200, response.body
        return [run["id"] for run in response.json()]

    assert ids("flow=report") == [recorded_history.report]
    assert ids("state=failed") == [recorded_history.failed]
    assert ids("flow=etl&state=Completed") == [recorded_history.completed]
    assert ids("limit=2") == [recorded_history.running, recorded_history.failed]
    assert ids(f"since={time.time() - 1000}") == [recorded_history.running, recorded_history.failed,
                                                  recorded_history.report]
    assert ids(f"q={recorded_history.failed[:7]}") == [recorded_history.failed]
    assert ids(f"q={recorded_history.report[:4]}&flow=etl") == []
    assert ids("flow=nope") == []


@pytest.mark.parametrize("query, message", [
    ("state=Exploded", "Unknown state 'Exploded'"),
    ("limit=0", "limit must be between 1 and 1000"),
    ("limit=ten", "limit must be an integer"),
    ("since=yesterday", "since must be epoch seconds"),
])
def test_bad_runs_queries_are_400_with_a_message(server: ServerThread, query: str,
                                                 message: str) -> None:
    response = get(server, f"/api/runs?{query}")
    assert response.status == 400
    assert message in response.json()["error"]


def test_run_detail_has_task_runs_with_upstream_attempts_and_cache(
        server: ServerThread, recorded_history: History) -> None:
    response = get(server, f"/api/runs/{recorded_history.failed}")
    assert response.status == 200
    run = response.json()
    assert run["id"] == recorded_history.failed
    assert run["state"] == "Failed"
    assert run["error"] == "ValueError: bad row 42"
    assert "raise ValueError" in run["traceback"]
    assert [state["state"] for state in run["state_history"]] == ["Running", "Failed"]
    task_runs = {task_run["task_name"]: task_run for task_run in run["task_runs"]}
    assert set(task_runs) == {"extract", "lookup", "transform", "load"}
    for task_run in run["task_runs"]:
        assert {"id", "task_name", "state", "start_time", "end_time", "attempts", "cache_key",
                "upstream"} <= set(task_run)
    transform = task_runs["transform"]
    assert transform["state"] == "Failed"
    assert transform["attempts"] == 2
    assert transform["worker"] == WORKER
    assert transform["upstream"] == [recorded_history.extract, recorded_history.lookup]
    assert task_runs["load"]["state"] == "NotRun"
    assert task_runs["load"]["upstream"] == [recorded_history.transform]
    assert task_runs["lookup"]["cache_hit"] is True
    assert task_runs["lookup"]["cache_key"] == "3f9a1c0d2e4b5a69"
    assert task_runs["extract"]["cache_hit"] is False
    assert task_runs["extract"]["result_size"] == 2048


def test_run_detail_accepts_a_unique_id_prefix(server: ServerThread,
                                               recorded_history: History) -> None:
    response = get(server, f"/api/runs/{recorded_history.report[:10]}")
    assert response.status == 200
    assert response.json()["id"] == recorded_history.report


def test_an_ambiguous_id_prefix_is_400_naming_the_matches(server: ServerThread,
                                                          history_store: HistoryStore) -> None:
    now = time.time()
    history_store.apply([started("abc123", "etl", now), started("abc456", "etl", now)])
    response = get(server, "/api/runs/abc")
    assert response.status == 400
    assert "ambiguous" in response.json()["error"] and "abc123" in response.json()["error"]
    assert get(server, "/api/runs/abc4").json()["id"] == "abc456"


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/runs/0000ffff-unknown"),
    ("GET", "/api/runs/0000ffff-unknown/logs"),
    ("POST", "/api/runs/0000ffff-unknown/cancel"),
    ("GET", "/api/task-runs/0000ffff-unknown"),
    ("GET", "/api/no-such-route"),
])
def test_unknown_ids_and_routes_are_json_404s(server: ServerThread, method: str, path: str) -> None:
    response = request(server.port, method, path, headers={"X-Dagrun-Request": "1"})
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("application/json")
    unknown = "no-such-route" if path.endswith("no-such-route") else "0000ffff-unknown"
    assert unknown in response.json()["error"]


# --- logs, task runs, flows ---

def test_logs_in_order_filtered_by_task_and_level(server: ServerThread,
                                                  recorded_history: History) -> None:
    path = f"/api/runs/{recorded_history.failed}/logs"
    page = get(server, path).json()
    assert [line["message"] for line in page["logs"]] == [
        "Extracted 10 rows",
        "Retry 1/1 of 'transform' in 0.5 s after ConnectionError: reset by peer",
        "Task 'transform' failed: ValueError: bad row 42",
        "Flow run 'etl' failed",
    ]
    assert page["next_after_id"] == page["logs"][-1]["id"]
    assert page["more"] is False
    assert page["run_ended"] is True  # Failed: these are all the lines there will be
    first = page["logs"][0]
    assert first["level_name"] == "INFO" and first["task_name"] == "extract"
    assert first["task_run_id"] == recorded_history.extract

    by_task = get(server, f"{path}?task=transform").json()["logs"]
    assert [line["level_name"] for line in by_task] == ["WARNING", "ERROR"]
    errors = get(server, f"{path}?level=error").json()["logs"]
    assert [line["message"] for line in errors] == [
        "Task 'transform' failed: ValueError: bad row 42", "Flow run 'etl' failed"]
    assert get(server, f"{path}?level=40").json()["logs"] == errors
    assert get(server, f"{path}?level=LOUD").status == 400


def test_logs_poll_incrementally_with_after_id(server: ServerThread, history_store: HistoryStore,
                                               recorded_history: History) -> None:
    path = f"/api/runs/{recorded_history.running}/logs"
    empty = get(server, path).json()
    assert empty == {"logs": [], "next_after_id": 0, "more": False, "run_ended": False}
    history_store.apply([LogLine(recorded_history.running, None, time.time(), 20, "dagrun.flow",
                                 f"line {i}") for i in range(3)])
    first = get(server, f"{path}?limit=2").json()
    assert [line["message"] for line in first["logs"]] == ["line 0", "line 1"]
    assert first["more"] is True
    rest = get(server, f"{path}?after_id={first['next_after_id']}").json()
    assert [line["message"] for line in rest["logs"]] == ["line 2"]
    # Lines filtered out by level still advance next_after_id, so polling does not stall.
    history_store.apply([LogLine(recorded_history.running, None, time.time(), 10, "x", "debug")])
    quiet = get(server, f"{path}?after_id={rest['next_after_id']}&level=ERROR").json()
    assert quiet["logs"] == [] and quiet["next_after_id"] > rest["next_after_id"]
    # The run's last line comes before its final state: a reader who sees the end has it.
    history_store.apply([
        LogLine(recorded_history.running, None, time.time(), 20, "dagrun.flow", "Finished in state Completed"),
        FlowRunState(recorded_history.running, "Completed", time.time()),
    ])
    last = get(server, f"{path}?after_id={quiet['next_after_id']}").json()
    assert [line["message"] for line in last["logs"]] == ["Finished in state Completed"]
    assert (last["more"], last["run_ended"]) == (False, True)


def test_task_run_has_attempts_states_and_error(server: ServerThread,
                                                recorded_history: History) -> None:
    response = get(server, f"/api/task-runs/{recorded_history.transform}")
    assert response.status == 200
    task_run = response.json()
    assert task_run["flow_run_id"] == recorded_history.failed
    assert task_run["task_name"] == "transform"
    assert task_run["error"] == "ValueError: bad row 42"
    assert [(a["attempt"], a["error"]) for a in task_run["attempt_history"]] == [
        (1, "ConnectionError: reset by peer"), (2, "ValueError: bad row 42")]
    # Upstream runs by name and state (their ids share the flow run's prefix, so ids alone
    # cannot tell them apart on a page).
    assert task_run["upstream_runs"] == [
        {"id": recorded_history.extract, "task_run_name": "extract-0", "state": "Completed"},
        {"id": recorded_history.lookup, "task_run_name": "lookup-0", "state": "Cached"},
    ]
    assert task_run["attempt_history"][1]["duration"] == pytest.approx(0.6)
    assert [s["state"] for s in task_run["state_history"]] == [
        "Pending", "Running", "Retrying", "Running", "Failed"]
    by_prefix = get(server, f"/api/task-runs/{recorded_history.transform[:12]}")
    assert by_prefix.json()["id"] == recorded_history.transform


def test_flows_have_statistics_and_recent_runs_for_the_chart(server: ServerThread,
                                                             recorded_history: History) -> None:
    flows = {flow["flow_name"]: flow for flow in get(server, "/api/flows").json()}
    assert set(flows) == {"etl", "report"}
    etl = flows["etl"]
    assert etl["run_count"] == 3
    assert etl["success_rate"] == pytest.approx(0.5)
    assert etl["median_duration"] == pytest.approx(12.0)
    assert etl["last_state"] == "Running"
    recent = etl["recent_runs"]
    assert [run["id"] for run in recent] == [recorded_history.completed, recorded_history.failed,
                                             recorded_history.running]  # oldest first
    assert [run["state"] for run in recent] == ["Completed", "Failed", "Running"]
    assert recent[1]["duration"] == pytest.approx(3.0)
    assert recent[2]["duration"] >= 5  # still running: its duration so far
    assert flows["report"]["success_rate"] == 1.0


# --- cancel and deployments ---

def test_cancel_requests_a_running_run_and_refuses_a_finished_one(
        server: ServerThread, history_store: HistoryStore, recorded_history: History) -> None:
    headers = {"X-Dagrun-Request": "1"}
    response = request(server.port, "POST", f"/api/runs/{recorded_history.running}/cancel",
                       headers=headers)
    assert response.status == 200
    assert response.json() == {"id": recorded_history.running, "cancel_requested": True}
    assert history_store.cancel_requested(recorded_history.running)
    finished = request(server.port, "POST", f"/api/runs/{recorded_history.failed}/cancel",
                       headers=headers)
    assert finished.status == 409
    assert "already finished" in finished.json()["error"]
    assert not history_store.cancel_requested(recorded_history.failed)


def test_a_post_without_the_dashboard_header_is_refused(
        server: ServerThread, history_store: HistoryStore, recorded_history: History) -> None:
    # What a cross-site form could send: no custom header.
    response = request(server.port, "POST", f"/api/runs/{recorded_history.running}/cancel")
    assert response.status == 403
    assert "X-Dagrun-Request" in response.json()["error"]
    assert not history_store.cancel_requested(recorded_history.running)


# --- pages and assets ---

def test_pages_and_every_asset_are_served_and_load_nothing_from_elsewhere(
        server: ServerThread) -> None:
    page = get(server, "/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.body.decode()
    assets = re.findall(r'(?:href|src)="(static/[^"]+)"', html)
    assert "static/app.css" in assets and "static/js/main.js" in assets
    static_dir = Path(__file__).parent.parent / "dagrun" / "server" / "static"
    for path in sorted(static_dir.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(static_dir).as_posix()
        response = get(server, f"/static/{relative}")
        assert response.status == 200, relative
        text = response.body.decode()
        # Works offline: the only URL is the SVG namespace, which is a name, not a fetch.
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{relative} refers to {urls}"
    for module in re.findall(r'from "\./([\w.]+)"', (static_dir / "js" / "main.js").read_text()):
        assert get(server, f"/static/js/{module}").status == 200
    assert get(server, "/static/nope.js").status == 404
    assert get(server, "/nope").status == 404


def test_a_foreign_host_name_is_refused_on_loopback(server: ServerThread) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name.
    assert get(server, "/api/runs", host="attacker.example").status == 403
    assert get(server, "/", host="localhost").status == 200


# --- the token ---

def test_with_a_token_every_request_needs_it(token_server: ServerThread,
                                             recorded_history: History) -> None:
    paths = ["/", "/static/app.css", "/static/js/main.js", "/api/runs",
             f"/api/runs/{recorded_history.failed}", "/api/flows", "/nope"]
    for path in paths:
        anonymous = get(token_server, path)
        assert anonymous.status == 401, path
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="dagrun"'
        assert get(token_server, path, headers={"Authorization": "Bearer wrong"}).status == 401
        assert get(token_server, path, headers={"Authorization": TOKEN}).status == 401
        expected = 404 if path == "/nope" else 200
        authorized = get(token_server, path, headers={"Authorization": f"Bearer {TOKEN}"},
                         host="dashboard.example")  # any Host name once the token is checked
        assert authorized.status == expected, path
    assert "Unauthorized" in get(token_server, "/api/runs").json()["error"]
    cancel = request(token_server.port, "POST", f"/api/runs/{recorded_history.running}/cancel")
    assert cancel.status == 401


def test_a_token_in_the_query_once_gives_the_browser_an_httponly_cookie(
        token_server: ServerThread) -> None:
    login = get(token_server, f"/?token={TOKEN}&theme=dark")
    assert login.status == 302
    assert login.headers["Location"] == "/?theme=dark"  # the token leaves the address bar
    cookie_header = login.headers["Set-Cookie"]
    assert cookie_header.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie_header and "SameSite=Strict" in cookie_header
    assert TOKEN not in cookie_header  # the cookie holds a keyed hash, not the token
    cookie = cookie_header.split(";", 1)[0]
    assert get(token_server, "/api/runs", headers={"Cookie": cookie}).status == 200
    assert get(token_server, "/static/app.css", headers={"Cookie": cookie}).status == 200
    forged = f"{SESSION_COOKIE}={'0' * 64}"
    assert get(token_server, "/api/runs", headers={"Cookie": forged}).status == 401

    wrong = get(token_server, "/?token=guess")
    assert wrong.status == 401
    assert "Set-Cookie" not in wrong.headers


def test_an_empty_token_is_a_configuration_error(history_store: HistoryStore) -> None:
    from dagrun.errors import ConfigError

    with pytest.raises(ConfigError, match="empty"):
        make_app(history_store, token="  ")


def server_process(database: Path, *arguments: str, token: str | None) -> subprocess.Popen[str]:
    """The real `dagrun server` command, through the console script."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DAGRUN_SERVER_TOKEN", None)
    if token is not None:
        env["DAGRUN_SERVER_TOKEN"] = token
    return subprocess.Popen(
        [*DAGRUN, "server", "--database", str(database),
         "--port", "0", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


@pytest.mark.parametrize("token", [None, ""])
def test_the_cli_refuses_a_non_loopback_bind_without_a_token(tmp_path: Path,
                                                             token: str | None) -> None:
    process = server_process(tmp_path / "history.db", "--host", "0.0.0.0", token=token)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stdout == ""
    assert stderr.splitlines() == [
        "Error: Refusing to serve the dashboard on '0.0.0.0' without a token: set "
        "DAGRUN_SERVER_TOKEN (every request must then send it), or bind to 127.0.0.1"
    ]


def test_the_cli_on_a_non_loopback_bind_demands_the_token(history_store: HistoryStore,
                                                          recorded_history: History) -> None:
    # Bound to every address, but this test connects only through 127.0.0.1.
    process = server_process(history_store.path, "--host", "0.0.0.0", token=TOKEN)
    try:
        assert process.stdout is not None
        match = re.match(r"dagrun server: http://0\.0\.0\.0:(\d+)/", process.stdout.readline())
        assert match, process.stderr.read() if process.stderr else ""
        port = int(match.group(1))
        assert request(port, "GET", "/api/runs").status == 401
        assert request(port, "GET", "/").status == 401
        response = request(port, "GET", "/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 200
        assert recorded_history.failed in {run["id"] for run in response.json()}
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


def test_the_cli_serves_loopback_without_a_token_and_stops_on_sigterm(
        history_store: HistoryStore, recorded_history: History) -> None:
    process = server_process(history_store.path, token=None)
    try:
        assert process.stdout is not None
        match = re.match(r"dagrun server: http://127\.0\.0\.1:(\d+)/", process.stdout.readline())
        assert match
        response = request(int(match.group(1)), "GET", f"/api/runs/{recorded_history.report}")
        assert response.status == 200 and response.json()["flow_name"] == "report"
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


def test_the_command_is_named_server_and_documents_its_options() -> None:
    result = subprocess.run([*DAGRUN, "server", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: dagrun server [OPTIONS]")
    for option in ("--host", "--port", "--database", "DAGRUN_SERVER_TOKEN", "127.0.0.1", "4200"):
        assert option in result.stdout


# --- cross-site requests in token mode ---

def test_off_loopback_a_cookie_alone_cannot_cancel_run_or_pause(
        history_store: HistoryStore, recorded_history: History) -> None:
    """What a page on another site could make the user's browser send: the session cookie
    (the browser attaches it) but no custom header. Nothing may change; the dashboard's own
    requests, which send X-Dagrun-Request, still work."""
    from dagrun import flow
    from dagrun.deployments.declaration import make_deployment
    from dagrun.deployments.store import DeploymentStore

    @flow(name="nightly")
    def nightly(x: int = 1) -> int:
        return x

    with DeploymentStore(history_store.path) as deployments:
        deployments.register([make_deployment(nightly, name="nightly", cron="@daily")],
                             datetime.now(UTC))
        env = {**os.environ, "DAGRUN_SERVER_TOKEN": TOKEN}
        with running_server("--database", str(history_store.path), "--host", "0.0.0.0", env=env) as (_, port):
            login = request(port, "GET", f"/?token={TOKEN}")
            assert login.status == 302
            cookie = {"Cookie": login.headers["Set-Cookie"].split(";", 1)[0]}
            assert "Secure" not in login.headers["Set-Cookie"]  # plain http: a Secure cookie would never come back
            actions = [f"/api/runs/{recorded_history.running}/cancel",
                       "/api/deployments/nightly/run", "/api/deployments/nightly/pause"]
            for path in actions:
                forged = request(port, "POST", path, headers=cookie)
                assert forged.status == 403, path
                assert "X-Dagrun-Request" in forged.json()["error"]
            assert not history_store.cancel_requested(recorded_history.running)
            assert deployments.requests("nightly") == []
            assert deployments.get("nightly")["paused"] is False

            own = {**cookie, "X-Dagrun-Request": "1"}
            assert [request(port, "POST", path, headers=own).status for path in actions] == [200, 202, 200]
            assert history_store.cancel_requested(recorded_history.running)
            assert len(deployments.requests("nightly")) == 1
            assert deployments.get("nightly")["paused"] is True
            # Behind a TLS proxy the cookie is Secure, so the browser never sends it over http.
            proxied = request(port, "GET", f"/?token={TOKEN}", headers={"X-Forwarded-Proto": "https"})
            assert "Secure" in proxied.headers["Set-Cookie"]
