"""The run-history store and its writer, on real SQLite files.

Events are fed the way the engine feeds them (through a `HistoryWriter` unless a test is
about `HistoryStore.apply` itself) and read back through the store's query methods. Tests
that take the `database` fixture hold for any database; `tests/test_history_postgres.py`
runs them again on PostgreSQL.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dagrun
from dagrun.errors import ConfigError
from dagrun.history import (
    FlowRunStarted,
    FlowRunState,
    HistoryStore,
    HistoryWriter,
    LogLine,
    TaskRunAttempt,
    TaskRunCreated,
    TaskRunState,
)
from dagrun.history.dialect import parse_database_url
from dagrun.history.schema import LATEST_VERSION, migrate

T0 = float(int(time.time()))  # runs whose timings a test checks exactly start here


def started(flow_run_id: str, flow_name: str = "etl", *, start_time: float = T0,
            lease_seconds: float = 3600.0, parameters: dict | None = None,
            parent_flow_run_id: str | None = None) -> FlowRunStarted:
    return FlowRunStarted(
        flow_run_id=flow_run_id,
        flow_name=flow_name,
        flow_run_name=f"{flow_name}-{flow_run_id}",
        parameters=parameters if parameters is not None else {"day": "2026-11-25"},
        start_time=start_time,
        parent_flow_run_id=parent_flow_run_id,
        parent_task_run_id=None,
        executor="DaskExecutor",
        address="tcp://127.0.0.1:8786",
        host="driver-host",
        pid=4242,
        lease_seconds=lease_seconds,
    )


def wait_until(condition, *, timeout: float, interval: float = 0.05):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def database(tmp_path: Path) -> str:
    """The URL of a new, empty database (here an SQLite file that does not exist yet)."""
    return str(tmp_path / "dagrun.db")


@pytest.fixture
def store(database: str):
    with HistoryStore(database) as store:
        yield store


@pytest.fixture
def writer(store: HistoryStore):
    writer = HistoryWriter(store, flush_interval=0.02)
    yield writer
    writer.close()


# --- a run recorded and read back ---


def test_multi_task_run_is_recorded_with_states_timings_edges_and_logs(store, writer):
    # extract -> (clean, count) -> load: a diamond, run with one log line per task.
    writer.submit(started("run-1"))
    upstream = {"extract": (), "clean": ("t-extract",), "count": ("t-extract",),
                "load": ("t-clean", "t-count")}
    for offset, (name, parents) in enumerate(upstream.items()):
        writer.submit(TaskRunCreated(f"t-{name}", "run-1", name, f"{name}-0", parents,
                                     f"key-{name}", T0 + 0.01 * offset))
    for step, name in enumerate(upstream):
        begin = T0 + 1 + step
        writer.submit(TaskRunState(f"t-{name}", "Running", begin, attempt=1,
                                   worker="tcp://10.0.0.5:40000"))
        writer.submit(LogLine("run-1", f"t-{name}", begin + 0.1, logging.INFO, "dagrun.task",
                              f"{name} working"))
        writer.submit(TaskRunAttempt(f"t-{name}", 1, begin, begin + 0.5))
        writer.submit(TaskRunState(f"t-{name}", "Completed", begin + 0.5, result_size=100 + step))
    writer.submit(LogLine("run-1", None, T0 + 6, logging.WARNING, "dagrun.flow", "all done"))
    writer.submit(FlowRunState("run-1", "Completed", T0 + 6, message="4 tasks"))
    assert writer.flush(timeout=30)

    run = store.get_flow_run("run-1")
    assert run["flow_name"] == "etl" and run["state"] == "Completed"
    assert (run["start_time"], run["end_time"], run["duration"]) == (T0, T0 + 6, 6)
    assert run["parameters"] == {"day": "2026-11-25"}
    assert (run["executor"], run["address"], run["host"], run["pid"]) == (
        "DaskExecutor", "tcp://127.0.0.1:8786", "driver-host", 4242)
    assert [s["state"] for s in run["state_history"]] == ["Running", "Completed"]
    assert run["error"] is None and run["traceback"] is None

    tasks = {task["task_name"]: task for task in run["task_runs"]}
    assert [task["task_name"] for task in run["task_runs"]] == list(upstream)
    assert {name: task["upstream"] for name, task in tasks.items()} == {
        name: list(parents) for name, parents in upstream.items()}
    for step, (name, task) in enumerate(tasks.items()):
        assert task["state"] == "Completed"
        assert task["start_time"] == T0 + 1 + step
        assert task["end_time"] == T0 + 1.5 + step
        assert task["duration"] == pytest.approx(0.5)
        assert task["attempts"] == 1
        assert task["cache_key"] == f"key-{name}" and task["cache_hit"] is None
        assert task["worker"] == "tcp://10.0.0.5:40000"
        assert task["result_size"] == 100 + step

    task = store.get_task_run("t-load")
    assert [(s["state"], s["timestamp"]) for s in task["state_history"]] == [
        ("Pending", T0 + 0.03), ("Running", T0 + 4), ("Completed", T0 + 4.5)]
    assert [a["attempt"] for a in task["attempt_history"]] == [1]

    logs = store.get_logs("run-1")
    assert [line["message"] for line in logs] == [
        "extract working", "clean working", "count working", "load working", "all done"]
    assert [line["task_run_name"] for line in logs] == [
        "extract-0", "clean-0", "count-0", "load-0", None]
    assert logs[-1]["level"] == logging.WARNING and logs[-1]["level_name"] == "WARNING"
    assert [line["message"] for line in store.get_logs("run-1", task_name="count")] == [
        "count working"]
    following = store.get_logs("run-1", after_id=logs[1]["id"], limit=2)
    assert [line["message"] for line in following] == ["count working", "load working"]


def test_runs_are_listed_newest_first_and_filtered(store):
    store.apply([started("old", "etl", start_time=T0), started("mid", "report", start_time=T0 + 10),
                 started("new", "etl", start_time=T0 + 20),
                 FlowRunState("old", "Completed", T0 + 5), FlowRunState("mid", "Failed", T0 + 12),
                 FlowRunState("new", "Completed", T0 + 23)])
    assert [run["id"] for run in store.list_flow_runs()] == ["new", "mid", "old"]
    assert [run["id"] for run in store.list_flow_runs(flow_name="etl")] == ["new", "old"]
    assert [run["id"] for run in store.list_flow_runs(state="failed")] == ["mid"]
    assert [run["id"] for run in store.list_flow_runs(limit=1)] == ["new"]
    first = store.list_flow_runs()[0]
    assert {"id", "flow_name", "state", "start_time", "end_time", "parameters",
            "duration", "deployment", "parent_flow_run_id"} <= set(first)
    with pytest.raises(ConfigError, match="Unknown state 'Finished'"):
        store.list_flow_runs(state="Finished")

    stats = {flow["flow_name"]: flow for flow in store.flow_stats()}
    assert stats["etl"] == {"flow_name": "etl", "run_count": 2, "success_rate": 1.0,
                                 "last_duration": 3.0, "median_duration": 4.0,
                                 "last_state": "Completed", "last_start_time": T0 + 20}
    assert stats["report"]["success_rate"] == 0.0
    assert stats["report"]["median_duration"] is None


def test_subflow_run_links_to_its_parent(store):
    store.apply([started("parent"), started("child", "sub", parent_flow_run_id="parent",
                                            start_time=T0 + 1)])
    assert store.get_flow_run("child")["parent_flow_run_id"] == "parent"
    assert [run["id"] for run in store.get_flow_run("parent")["subflow_runs"]] == ["child"]


def test_failed_run_keeps_each_attempt_and_the_traceback(store, writer):
    traceback = (
        'Traceback (most recent call last):\n  File "etl.py", line 3\nConnectionError: refused'
    )
    writer.submit(started("run-f"))
    writer.submit(TaskRunCreated("t-extract", "run-f", "extract", "extract-0", (), None, T0))
    writer.submit(TaskRunCreated("t-load", "run-f", "load", "load-0", ("t-extract",), None, T0))
    for attempt in (1, 2, 3):
        begin = T0 + 10 * attempt
        writer.submit(TaskRunState("t-extract", "Running", begin, attempt=attempt))
        writer.submit(TaskRunAttempt("t-extract", attempt, begin, begin + 1,
                                     error=f"ConnectionError: refused ({attempt})",
                                     traceback=traceback))
        if attempt < 3:
            writer.submit(TaskRunState("t-extract", "Retrying", begin + 1,
                                       message=f"Retry {attempt}/2 of 'extract' in 4.0 s",
                                       error=f"ConnectionError: refused ({attempt})"))
    writer.submit(TaskRunState("t-extract", "Failed", T0 + 31, error="ConnectionError: refused (3)",
                               traceback=traceback))
    writer.submit(TaskRunState("t-load", "NotRun", T0 + 31,
                               message="'load' did not run because 'extract' failed"))
    writer.submit(FlowRunState("run-f", "Failed", T0 + 32, message="'extract' failed",
                               error="ConnectionError: refused (3)", traceback=traceback))
    assert writer.flush(timeout=30)

    run = store.get_flow_run("run-f")
    assert run["state"] == "Failed" and run["end_time"] == T0 + 32
    assert run["error"] == "ConnectionError: refused (3)" and run["traceback"] == traceback
    extract, load = run["task_runs"]
    assert (extract["state"], extract["attempts"], extract["start_time"], extract["end_time"]) == (
        "Failed", 3, T0 + 10, T0 + 31)
    assert extract["traceback"] == traceback
    assert (load["state"], load["attempts"], load["start_time"]) == ("NotRun", 0, None)

    task = store.get_task_run("t-extract")
    assert [(a["attempt"], a["error"], a["duration"]) for a in task["attempt_history"]] == [
        (n, f"ConnectionError: refused ({n})", 1.0) for n in (1, 2, 3)]
    assert all(a["traceback"] == traceback for a in task["attempt_history"])
    assert [s["state"] for s in task["state_history"]] == [
        "Pending", "Running", "Retrying", "Running", "Retrying", "Running", "Failed"]
    assert task["state_history"][2]["message"] == "Retry 1/2 of 'extract' in 4.0 s"


def test_a_final_state_replaces_the_error_of_an_earlier_attempt(store):
    store.apply([started("run"), TaskRunCreated("t", "run", "flaky", "flaky-0", (), None, T0),
                 TaskRunState("t", "Running", T0 + 1, attempt=1),
                 TaskRunState("t", "Retrying", T0 + 2, error="ValueError: boom"),
                 TaskRunState("t", "Running", T0 + 3, attempt=2),
                 TaskRunState("t", "Completed", T0 + 4)])
    task = store.get_task_run("t")
    assert (task["state"], task["error"], task["attempts"]) == ("Completed", None, 2)
    assert (task["start_time"], task["end_time"]) == (T0 + 1, T0 + 4)


def test_cached_task_is_recorded_as_a_cache_hit(store):
    store.apply([started("run"), TaskRunCreated("t", "run", "extract", "extract-0", (), "3f9a", T0),
                 TaskRunState("t", "Cached", T0 + 1, message="Cached 'extract' (key 3f9a)")])
    task = store.get_flow_run("run")["task_runs"][0]
    assert (task["state"], task["cache_hit"], task["end_time"]) == ("Cached", True, T0 + 1)


# --- drivers that die ---

_DOOMED_DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from dagrun.history import (FlowRunStarted, HistoryStore, HistoryWriter, TaskRunCreated,
                                TaskRunState)

    writer = HistoryWriter(HistoryStore(sys.argv[1]), flush_interval=0.05)
    now = time.time()
    writer.submit(FlowRunStarted("doomed", "doomed_flow", "doomed-1", {}, now, None, None,
                                 "local", None, "driver-host", os.getpid(), lease_seconds=1.0))
    writer.submit(TaskRunCreated("t-done", "doomed", "a", "a-0", (), None, now))
    writer.submit(TaskRunCreated("t-running", "doomed", "b", "b-0", ("t-done",), None, now))
    writer.submit(TaskRunCreated("t-pending", "doomed", "c", "c-0", ("t-running",), None, now))
    writer.submit(TaskRunState("t-done", "Running", now))
    writer.submit(TaskRunState("t-done", "Completed", now + 0.01))
    writer.submit(TaskRunState("t-running", "Running", now + 0.02))
    writer.flush()
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_driver_killed_with_sigkill_is_reported_crashed_after_its_lease(database):
    db = database
    env = dict(os.environ, PYTHONPATH=str(Path(dagrun.__file__).parent.parent))
    driver = subprocess.Popen([sys.executable, "-c", _DOOMED_DRIVER, db],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert driver.stdout.readline().strip() == "ready"
        with HistoryStore(db) as store:
            # Alive past its first 1 s lease: the writer's heartbeats keep it Running.
            run = wait_until(lambda: (r := store.get_flow_run("doomed"))
                             and r["heartbeat"] > r["start_time"] + 1.5 and r, timeout=20)
            assert run["state"] == "Running"
            assert store.mark_lost_runs() == 0

            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=10)
            killed_at = time.time()
            run = wait_until(lambda: (r := store.get_flow_run("doomed"))["state"] == "Crashed"
                             and r, timeout=20)
            assert time.time() - killed_at < 10
            assert run["end_time"] == run["heartbeat"]  # when the driver was last seen
            assert "stopped sending heartbeats" in run["message"]
            assert [s["state"] for s in run["state_history"]] == ["Running", "Crashed"]
            states = {task["id"]: task["state"] for task in run["task_runs"]}
            assert states == {"t-done": "Completed", "t-running": "Crashed",
                              "t-pending": "Crashed"}
            assert store.get_task_run("t-running")["state_history"][-1]["state"] == "Crashed"
            assert store.list_flow_runs(state="Running") == []
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_a_new_run_starting_marks_lost_runs_crashed(store):
    now = time.time()
    store.apply([started("lost", start_time=now - 100, lease_seconds=5)])
    store.apply([started("fresh", start_time=now, lease_seconds=5)])
    # Read the rows directly: get_flow_run() would mark the lost run Crashed itself.
    crashed = store._connection().execute("SELECT id, state FROM flow_runs ORDER BY id").fetchall()
    assert crashed == [{"id": "fresh", "state": "Running"}, {"id": "lost", "state": "Crashed"}]


def test_writer_heartbeats_stop_when_the_run_ends(store):
    writer = HistoryWriter(store, flush_interval=0.01)
    try:
        writer.submit(started("short", start_time=time.time(), lease_seconds=0.3))
        wait_until(lambda: (run := store.get_flow_run("short"))
                   and run["heartbeat"] > run["start_time"] + 0.4, timeout=10)
        writer.submit(FlowRunState("short", "Completed", time.time()))
        assert writer.flush(timeout=10)
        last = store.get_flow_run("short")["heartbeat"]
        time.sleep(0.5)  # longer than the 0.1 s heartbeat interval
        assert store.get_flow_run("short")["heartbeat"] == last
        assert store.get_flow_run("short")["state"] == "Completed"
    finally:
        writer.close()


def test_writer_survives_a_malformed_event_and_keeps_writing(store, caplog):
    writer = HistoryWriter(store, flush_interval=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="dagrun.history"):
            writer.submit(started("bad", lease_seconds="soon"))  # not a number of seconds
            assert writer.flush(timeout=10)
            writer.submit(started("good"))
            assert writer.flush(timeout=10)
    finally:
        writer.close()
    assert writer.dropped == 1
    assert len([r for r in caplog.records if r.name == "dagrun.history"]) == 1
    assert [run["id"] for run in store.list_flow_runs()] == ["good"]


# --- concurrency ---

RUNS_PER_PROCESS = 4
TASKS_PER_RUN = 500


def _write_runs_in_a_process(db: str, process: int, start, results) -> None:
    """One driver: its own store and writer, thousands of events, any warning reported."""
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("dagrun.history").addHandler(Collect(logging.WARNING))
    try:
        store = HistoryStore(db)
        writer = HistoryWriter(store, flush_interval=0.005)
        start.wait()
        for run in range(RUNS_PER_PROCESS):
            flow_run_id = f"p{process}-r{run}"
            writer.submit(started(flow_run_id, f"flow-{process}", start_time=time.time()))
            for task in range(TASKS_PER_RUN):
                task_run_id = f"{flow_run_id}-t{task}"
                writer.submit(TaskRunCreated(task_run_id, flow_run_id, "work", f"work-{task}",
                                             (), None, time.time()))
                writer.submit(TaskRunState(task_run_id, "Running", time.time(), attempt=1))
                writer.submit(LogLine(flow_run_id, task_run_id, time.time(), logging.INFO,
                                      "dagrun.task", f"line {task}"))
                writer.submit(TaskRunState(task_run_id, "Completed", time.time()))
            writer.submit(FlowRunState(flow_run_id, "Completed", time.time()))
        writer.close()
        store.close()
        results.put((process, warnings))
    except BaseException as exc:
        results.put((process, [*warnings, f"{type(exc).__name__}: {exc}"]))
        raise


def test_four_processes_write_at_once_without_locking_errors(database):
    db = database  # its schema not created yet: the four also race to create it
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=_write_runs_in_a_process, args=(db, n, start, results))
                 for n in range(4)]
    for process in processes:
        process.start()
    start.set()
    reports = dict(results.get(timeout=240) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert reports == {n: [] for n in range(4)}  # no warning: nothing dropped, nothing locked

    with HistoryStore(db) as store:
        runs = store.list_flow_runs(limit=None)
        assert len(runs) == 4 * RUNS_PER_PROCESS
        assert {run["state"] for run in runs} == {"Completed"}
        for run in runs:
            detail = store.get_flow_run(run["id"])
            assert len(detail["task_runs"]) == TASKS_PER_RUN
            assert {task["state"] for task in detail["task_runs"]} == {"Completed"}
            lines = store.get_logs(run["id"])
            assert [line["message"] for line in lines] == [
                f"line {n}" for n in range(TASKS_PER_RUN)]


def test_writer_batches_events_into_few_transactions(store):
    batches: list[int] = []
    apply = store.apply
    store.apply = lambda events: (batches.append(len(events)), apply(events))[1]
    writer = HistoryWriter(store, flush_interval=0.2, max_batch=1000)
    try:
        writer.submit(started("run"))
        for n in range(5000):
            writer.submit(TaskRunCreated(f"t{n}", "run", "work", f"work-{n}", (), None, T0))
        assert writer.flush(timeout=30)
    finally:
        writer.close()
    assert sum(batches) >= 5001 and max(batches) <= 1000
    assert len(batches) <= 12  # thousands of events, a handful of transactions
    assert len(store.get_flow_run("run")["task_runs"]) == 5000


# --- schema and configuration ---


def applied_migrations(store: HistoryStore) -> list[dict]:
    return store._connection().execute(
        "SELECT version, description, applied FROM schema_version ORDER BY version").fetchall()


def test_a_new_database_gets_every_migration_and_reopening_changes_nothing(database):
    with HistoryStore(database) as store:
        applied = applied_migrations(store)
        assert [row["version"] for row in applied] == list(range(1, LATEST_VERSION + 1))
        store.apply([started("run")])
    with HistoryStore(database) as store:
        assert applied_migrations(store) == applied
        assert [run["id"] for run in store.list_flow_runs()] == ["run"]


def test_database_at_schema_version_1_is_upgraded_when_opened(database):
    dialect = parse_database_url(database)
    connection = dialect.connect()
    assert migrate(connection, begin_write=dialect.begin_write, ddl=dialect.ddl,
                   describe=dialect.describe(), target=1) == 1
    connection.execute(
        "INSERT INTO flow_runs (id, flow_name, flow_run_name, state, parameters, start_time, "
        "end_time, heartbeat, lease_seconds) VALUES "
        "('old-run', 'etl', 'etl-0', 'Completed', '{\"day\": \"2025-01-01\"}', 100, 160, 160, 30)"
    )
    assert "cancel_requested" not in connection.execute("SELECT * FROM flow_runs").fetchone()
    connection.close()

    with HistoryStore(database) as store:
        assert [row["version"] for row in applied_migrations(store)] == list(
            range(1, LATEST_VERSION + 1))
        old = store.get_flow_run("old-run")
        assert (old["state"], old["duration"], old["parameters"]) == (
            "Completed", 60, {"day": "2025-01-01"})
        assert old["deployment"] is None and old["cancel_requested"] is False
        store.apply([started("new-run", start_time=time.time())])
        assert store.request_cancel("new-run")


def test_database_from_a_newer_dagrun_is_refused(database):
    HistoryStore(database).close()
    connection = parse_database_url(database).connect()
    connection.execute("INSERT INTO schema_version VALUES (99, 'the future', 0)")
    connection.close()
    with pytest.raises(ConfigError, match="schema version 99, newer than"):
        HistoryStore(database)


def test_database_is_in_wal_mode_with_normal_sync_and_a_busy_timeout(store):
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    connection = store._connection()
    assert connection.execute("PRAGMA synchronous").fetchone() == {"synchronous": 1}  # NORMAL
    assert connection.execute("PRAGMA busy_timeout").fetchone()["timeout"] >= 5000


@pytest.mark.parametrize("url", ["s3://bucket/dagrun.db", "mysql://dagrun:hunter2@db/history",
                                 "sqlite://", "sqlite:///:memory:", "sqlite:///x.db?cache=shared"])
def test_unsupported_database_urls_name_the_setting(url):
    with pytest.raises(ConfigError, match="DAGRUN_DATABASE_URL") as raised:
        HistoryStore(url)
    assert "hunter2" not in str(raised.value)  # a password is shown as ***


def test_from_env_uses_dagrun_home_or_the_database_url(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGRUN_DATABASE_URL", raising=False)
    monkeypatch.setenv("DAGRUN_HOME", str(tmp_path / "home" / "nested"))
    with HistoryStore.from_env() as store:
        assert store.path == tmp_path / "home" / "nested" / "dagrun.db"
        assert store.path.exists()
    monkeypatch.setenv("DAGRUN_DATABASE_URL", f"sqlite:///{tmp_path}/elsewhere/runs.db")
    with HistoryStore.from_env() as store:
        assert store.path == tmp_path / "elsewhere" / "runs.db"
        assert store.path.exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGRUN_DATABASE_URL", "sqlite:///relative.db")
    with HistoryStore.from_env() as store:
        assert store.path == Path("relative.db") and (tmp_path / "relative.db").exists()


def test_unwritable_database_logs_one_warning_and_never_raises(tmp_path, caplog):
    db = tmp_path / "dagrun.db"
    HistoryStore(db).close()
    # mode=ro makes SQLite itself refuse writes, also for root (whom chmod would not stop).
    with HistoryStore(f"sqlite:///{db}?mode=ro") as store:
        writer = HistoryWriter(store, flush_interval=0.01)
        with caplog.at_level(logging.WARNING, logger="dagrun.history"):
            writer.submit(started("run", start_time=time.time(), lease_seconds=0.3))
            writer.submit(TaskRunCreated("t", "run", "extract", "extract-0", (), None, T0))
            assert writer.flush(timeout=10)
            for n in range(3):
                writer.submit(LogLine("run", None, time.time(), logging.INFO, "flow", f"{n}"))
                assert writer.flush(timeout=10)
            writer.close()
        warnings = [r for r in caplog.records if r.name == "dagrun.history"
                    and r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "Run history is not being recorded" in warnings[0].getMessage()
        assert "readonly" in warnings[0].getMessage()
        assert writer.dropped >= 5
        assert store.list_flow_runs() == []  # reading still works


# --- parameters, cancellation, ids ---


class Secret:
    """Stands in for dagrun.Secret: masked because of its class name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"


class Token:
    def __repr__(self) -> str:
        return "****"


class Point:
    def __repr__(self) -> str:
        return "Point(1, 2)"


def test_secret_parameters_are_masked_and_other_values_stored_readably(store):
    store.apply([started("run", parameters={
        "day": "2026-11-25", "retries": 3, "ratio": 0.5, "flag": True, "nothing": None,
        "password": Secret("DB_PASSWORD"), "token": Token(), "masked": "****",
        "nested": {"dsn": Secret("DSN"), "hosts": ["a", Secret("B")], 7: (1, 2)},
        "point": Point(), "nan": math.nan, "tags": {"b", "a"},
    })])
    assert store.get_flow_run("run")["parameters"] == {
        "day": "2026-11-25", "retries": 3, "ratio": 0.5, "flag": True, "nothing": None,
        "password": "****", "token": "****", "masked": "****",
        "nested": {"dsn": "****", "hosts": ["a", "****"], "7": [1, 2]},
        "point": "Point(1, 2)", "nan": "nan", "tags": ["a", "b"],
    }
    raw = store._connection().execute("SELECT parameters FROM flow_runs").fetchone()
    assert "DB_PASSWORD" not in raw["parameters"] and "DSN" not in raw["parameters"]


def test_request_cancel_reaches_a_running_run_only(store):
    store.apply([started("running", start_time=time.time()),
                 started("finished", start_time=time.time()),
                 FlowRunState("finished", "Completed", time.time())])
    assert store.cancel_requested("running") is False
    assert store.request_cancel("running") is True
    assert store.cancel_requested("running") is True
    assert store.request_cancel("running") is True  # asking twice is harmless
    assert store.get_flow_run("running")["cancel_requested"] is True
    assert store.request_cancel("finished") is False
    assert store.cancel_requested("finished") is False
    assert store.request_cancel("no-such-run") is False
    assert store.cancel_requested("no-such-run") is False


def test_resolve_id_accepts_unique_prefixes(store):
    store.apply([started("3f9a1c00"), started("3f9b7700"), started("3f9a"), started("a_%")])
    store.apply([TaskRunCreated("77aa", "3f9a1c00", "t", "t-0", (), None, T0)])
    assert store.resolve_id("3f9a1") == "3f9a1c00"
    assert store.resolve_id("3f9b") == "3f9b7700"
    assert store.resolve_id("3f9a") == "3f9a"  # an exact id wins over longer ones
    assert store.resolve_id("a_") == "a_%"
    assert store.resolve_id("a%") is None  # no wildcard matching
    assert store.resolve_id("ffff") is None
    assert store.resolve_id("") is None
    ambiguous = "'3f9' is ambiguous: it matches 3f9a, 3f9a1c00, 3f9b7700"
    with pytest.raises(ConfigError, match=ambiguous):
        store.resolve_id("3f9")
    assert store.resolve_id("77", kind="task_run") == "77aa"
    assert store.resolve_id("77") is None


def test_unknown_event_is_refused_before_anything_is_written(store):
    with pytest.raises(TypeError, match="not a history event"):
        store.apply([started("run"), "not an event"])
    assert store.list_flow_runs() == []
