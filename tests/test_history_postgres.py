"""The run history, deployment claims and the CLI on a real PostgreSQL server, through
`DAGRUN_DATABASE_URL=postgresql://...`: the same code as on SQLite, so the same tests.

A throwaway server (`initdb` in a temporary directory, run as the `postgres` user when the
tests run as root, since PostgreSQL refuses root) starts once for this module and is stopped
at its end, whatever happened. Each test gets a new database on it, named by the `database`
fixture and set as DAGRUN_DATABASE_URL, with a password that no message may show.

Most tests here are imported from the SQLite modules and run again on this module's
fixtures: those take `database` (or `store`, opened on it), or read the history through
`HistoryStore.from_env()` and the `dagrun` console script, which follow DAGRUN_DATABASE_URL. The tests
written here are about what only a server database has: its URL, password, connections.
Skipped only where the PostgreSQL server binaries are not installed, and failed for that under CI
(`CI=true`; `.ci/run` installs them).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagrun import flow, get_run_logger, task
from dagrun.deployments import DeploymentStore, Service, make_deployment
from dagrun.errors import ConfigError
from dagrun.executors import InProcessExecutor
from dagrun.history import HistoryStore, LogLine

sys.path.insert(0, str(Path(__file__).parent))
from real_parts import require_module, require_part  # noqa: E402
from test_deployments import (  # noqa: E402, F401 - tests and fixtures run again here
    flows,
    test_racing_claimers_claim_each_slot_and_request_once_and_respect_the_limit,
)
from test_history_store import (  # noqa: E402, F401
    T0,
    started,
    store,
    test_a_final_state_replaces_the_error_of_an_earlier_attempt,
    test_a_new_database_gets_every_migration_and_reopening_changes_nothing,
    test_a_new_run_starting_marks_lost_runs_crashed,
    test_cached_task_is_recorded_as_a_cache_hit,
    test_database_at_schema_version_1_is_upgraded_when_opened,
    test_database_from_a_newer_dagrun_is_refused,
    test_driver_killed_with_sigkill_is_reported_crashed_after_its_lease,
    test_failed_run_keeps_each_attempt_and_the_traceback,
    test_multi_task_run_is_recorded_with_states_timings_edges_and_logs,
    test_request_cancel_reaches_a_running_run_only,
    test_resolve_id_accepts_unique_prefixes,
    test_runs_are_listed_newest_first_and_filtered,
    test_secret_parameters_are_masked_and_other_values_stored_readably,
    test_subflow_run_links_to_its_parent,
    test_unknown_event_is_refused_before_anything_is_written,
    test_writer_batches_events_into_few_transactions,
    test_writer_survives_a_malformed_event_and_keeps_writing,
    writer,
)
from test_run_history import (  # noqa: E402, F401
    dagrun_cli,
    test_a_failed_run_keeps_its_attempts_errors_and_traceback,
    test_four_processes_record_everything_without_lock_errors,
    test_runs_cli_json_fields,
    test_states_timings_edges_and_logs_of_a_multi_task_run,
)
from test_serve import runs_ls, tick_until  # noqa: E402


def server_binaries() -> Path | None:
    """The directory with `initdb` and `postgres`: on PATH, else Debian's newest version."""
    candidates = [shutil.which("initdb")] + sorted(
        (str(path) for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda path: [int(number) for number in re.findall(r"\d+", path)],
        reverse=True,
    )
    for initdb in filter(None, candidates):
        directory = Path(initdb).resolve().parent
        if (directory / "postgres").exists():
            return directory
    return None


BINARIES = server_binaries()

USER = "dagrun"
PASSWORD = "pg-secret-3f9a"
"""In every URL here; no message may show it."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_user() -> dict[str, Any]:
    """Popen options that run the server as `postgres` (else `nobody`) when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        account = pwd.getpwnam("nobody")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


class PostgresServer:
    """A PostgreSQL server of our own on 127.0.0.1, its files in a temporary directory."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.directory = Path(tempfile.mkdtemp(prefix="dagrun-postgres-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()

    def url(self, database: str, password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{port or self.port}/{database}"

    def start(self) -> None:
        as_user = server_user()
        if as_user:
            os.chown(self.directory, as_user["user"], as_user["group"])
        password_file = self.directory / "password"
        password_file.write_text(PASSWORD)
        password_file.chmod(0o644)
        subprocess.run(
            [self.binaries / "initdb", "-D", self.directory / "data", "-U", USER,
             f"--pwfile={password_file}", "--auth-local=trust", "--auth-host=scram-sha-256",
             "--encoding=UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, **as_user,
        )
        with open(self.directory / "server.log", "wb") as log:
            self.process = subprocess.Popen(
                [self.binaries / "postgres", "-D", self.directory / "data",
                 "-k", self.directory, "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
                 # A database that lives for one test run needs no crash safety.
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, **as_user,
            )
        self._wait_until_ready()

    def _wait_until_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process is not None and self.process.poll() is not None:
                    log = (self.directory / "server.log").read_text(errors="replace")
                    pytest.fail(f"PostgreSQL exited with {self.process.returncode}:\n{log}")
                if time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL did not accept connections within {timeout} s")
                time.sleep(0.05)

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        import psycopg

        name = f"history_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def terminate_backend(self, pid: int) -> None:
        """End one connection's server process, as a restart or an idle timeout would."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnects clients
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    require_part("The PostgreSQL server (initdb, postgres)", BINARIES is not None, "apt-get install postgresql")
    require_module("psycopg", "psycopg", "pip install -e '.[test]'")
    assert BINARIES is not None
    server = PostgresServer(BINARIES)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty PostgreSQL database."""
    return postgres_server.new_database()


@pytest.fixture(autouse=True)
def database_in_env(database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every process a test starts records into its database, as `runs ls` reads it."""
    monkeypatch.setenv("DAGRUN_DATABASE_URL", database)
    return database


# --- what only a server database has --------------------------------------------------


def test_the_store_reopens_its_url_and_names_it_without_the_password(
    database: str, postgres_server: PostgresServer
) -> None:
    for spelling in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        with HistoryStore(database.replace("postgresql://", spelling)) as store:
            store.apply([started(f"run-{spelling}")])
            assert store.url == database and store.path is None
    with HistoryStore(database) as store:
        assert len(store.list_flow_runs()) == 3
        masked = f"postgresql://{USER}:***@127.0.0.1:{postgres_server.port}/"
        assert store.describe().startswith(f"PostgreSQL database {masked}history_")
        assert PASSWORD not in store.describe() + repr(store) + repr(store.database)


@pytest.mark.parametrize(
    "problem", ["nothing listens on the port", "wrong password", "no such database"]
)
def test_a_database_that_cannot_be_opened_is_a_config_error_without_the_password(
    problem: str, postgres_server: PostgresServer
) -> None:
    url = {
        "nothing listens on the port": postgres_server.url("postgres", port=free_port()),
        "wrong password": postgres_server.url("postgres", password="not-" + PASSWORD),
        "no such database": postgres_server.url("missing"),
    }[problem]
    with pytest.raises(ConfigError) as raised:
        HistoryStore(url)
    message = str(raised.value)
    assert "DAGRUN_DATABASE_URL" in message and f"{USER}:***@127.0.0.1" in message
    assert PASSWORD not in message


def test_an_unreachable_server_leaves_flows_running_and_the_cli_saying_why(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DAGRUN_DATABASE_URL", postgres_server.url("history", port=free_port()))

    @task
    def one() -> int:
        return 1

    @flow(executor=InProcessExecutor())
    def unrecorded() -> int:
        return one()

    with caplog.at_level(logging.WARNING, logger="dagrun.history"):
        assert unrecorded() == 1
    [warning] = [record.getMessage() for record in caplog.records if record.name == "dagrun.history"]
    assert "Run history unavailable" in warning and "DAGRUN_DATABASE_URL" in warning
    assert PASSWORD not in warning
    listed = dagrun_cli("runs", "ls")
    assert listed.returncode == 2 and "DAGRUN_DATABASE_URL" in listed.stderr
    assert PASSWORD not in listed.stderr + listed.stdout


def test_runs_show_json_has_each_task_runs_state_and_upstream_ids() -> None:
    @task
    def extract() -> list[int]:
        return [1, 2]

    @task
    def double(rows: list[int]) -> list[int]:
        return [2 * row for row in rows]

    @task
    def total(left: list[int], right: list[int]) -> int:
        get_run_logger().info("total %d", sum(left + right))
        return sum(left + right)

    @flow(name="diamond", executor=InProcessExecutor())
    def diamond() -> int:
        rows = extract()
        return total(double(rows), double(rows))

    assert diamond() == 12
    [listed] = json.loads(dagrun_cli("runs", "ls", "--json").stdout)
    shown = json.loads(dagrun_cli("runs", "show", listed["id"], "--json").stdout)
    tasks = {task_run["task_run_name"]: task_run for task_run in shown["task_runs"]}
    assert {name: task_run["state"] for name, task_run in tasks.items()} == dict.fromkeys(
        ["extract-0", "double-0", "double-1", "total-0"], "Completed")
    assert tasks["double-1"]["upstream"] == [tasks["extract-0"]["id"]]
    assert tasks["total-0"]["upstream"] == [tasks["double-0"]["id"], tasks["double-1"]["id"]]
    assert "total 12" in dagrun_cli("runs", "logs", listed["id"]).stdout


def test_a_connection_the_server_closed_is_replaced(store: HistoryStore, postgres_server: PostgresServer) -> None:
    store.apply([started("before")])
    postgres_server.terminate_backend(
        store._connection().execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
    )
    with pytest.raises(store.database.Error, match="terminating connection"):
        store.apply([started("lost")])  # the statement that finds it closed fails...
    store.apply([started("after")])  # ...and the next one runs on a new connection
    assert sorted(run["id"] for run in store.list_flow_runs()) == ["after", "before"]


def test_text_with_a_nul_character_is_stored_rather_than_refused(store: HistoryStore) -> None:
    store.apply([started("run"), LogLine("run", None, T0, logging.INFO, "flow", "a\x00b %s ? 100%")])
    assert [line["message"] for line in store.get_logs("run")] == ["a\ufffdb %s ? 100%"]


def test_a_deployment_run_records_itself_in_the_services_database(
    flows: dict[str, Any], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGRUN_DATABASE_URL")  # the run learns the database from the service
    manual = make_deployment(flows["doubler"], name="manual", parameters={"x": 2})
    with DeploymentStore(database) as deployments:
        service = Service([manual], deployments, poll_interval=0.1)
        service.tick()
        deployments.request_run("manual", {"x": 21}, requested_by="test")
        tick_until(service, lambda: bool(deployments.claims()) and not service.running)
        service.stop()
        [claim] = deployments.claims("manual")
    [run] = runs_ls(database)
    assert (run["id"], run["deployment"], run["state"]) == (claim["id"], "manual", "Completed")
    assert run["parameters"] == {"x": 21, "upstream_run_id": None}
    assert claim["state"] == "Completed" and claim["exit_code"] == 0
