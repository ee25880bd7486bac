"""`dagrun serve` with real run processes: each run is `python -m dagrun run FILE:FLOW`, and
what it did is read back from the run history (`dagrun runs ls --json`, `flow_runs`).

The service is driven by `tick()` under an injected clock where slot times matter (so no test
sleeps through real minutes), and run as a real `serve` subprocess where signals and leftover
processes matter.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest

from dagrun.deployments import DeploymentStore, Service, Trigger, make_deployment

sys.path.insert(0, str(Path(__file__).parent))
from conftest import wait_until_gone  # noqa: E402
from console_script import DAGRUN  # noqa: E402
from test_deployments import Clock, flows_module, utc, write_flows  # noqa: E402

UTC = timezone.utc
TIMEOUT = 60.0


def dagrun_command(*args: str) -> list[str]:
    """`dagrun ARGS` through the console script."""
    return [*DAGRUN, *args]


def runs_ls(database: Path) -> list[dict[str, Any]]:
    """`dagrun runs ls --json` on `database`."""
    result = subprocess.run(
        [*DAGRUN, "runs", "ls", "--json", "--limit", "1000"],
        env={**os.environ, "DAGRUN_DATABASE_URL": str(database)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    runs: list[dict[str, Any]] = json.loads(result.stdout)
    return runs


def history_rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        return connection.execute(sql).fetchall()


def runs_per_slot(database: Path) -> list[tuple[Any, ...]]:
    """(deployment, slot, runs) for every slot that started a run, from the history."""
    return history_rows(
        database,
        "SELECT deployment, slot, COUNT(*) FROM flow_runs WHERE slot IS NOT NULL "
        "GROUP BY deployment, slot ORDER BY deployment, slot",
    )


def tick_until(target: Service, done: Callable[[], bool], clock: Clock | None = None) -> None:
    """Tick (at `clock`'s time, else now) until `done()`, for at most TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not done():
        assert time.monotonic() < deadline, "timed out"
        target.tick(clock() if clock else None)
        time.sleep(0.1)


@pytest.fixture
def flows(tmp_path: Path) -> dict[str, Any]:
    return flows_module(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeploymentStore]:
    with DeploymentStore(tmp_path / "dagrun.db") as opened:
        yield opened


def real_service(deployments: list[Any], store: DeploymentStore, **options: Any) -> Service:
    return Service(deployments, store, log_dir=store.path.parent / "logs", poll_interval=0.1, **options)


def test_a_manual_run_then_a_trigger_chain_a_to_b_are_ordinary_runs(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    extract = make_deployment(flows["doubler"], name="extract", parameters={"x": 2})
    report = make_deployment(flows["report"], name="report", triggers=[Trigger(after_deployment="extract")])
    target = real_service([extract, report], store)
    target.tick()
    request = store.request_run("extract", {"x": 21}, requested_by="test")
    tick_until(target, lambda: len(store.claims()) == 2 and not target.running)
    target.stop()

    runs = {run["deployment"]: run for run in runs_ls(store.path)}
    assert set(runs) == {"extract", "report"}
    upstream, downstream = runs["extract"], runs["report"]
    assert (upstream["flow_name"], upstream["state"]) == ("doubler", "Completed")
    assert upstream["parameters"] == {"x": 21, "upstream_run_id": None}
    assert (downstream["flow_name"], downstream["state"]) == ("report", "Completed")
    assert downstream["parameters"] == {"upstream_run_id": upstream["id"]}
    assert store.requests("extract")[0]["id"] == request
    assert store.requests("extract")[0]["flow_run_id"] == upstream["id"]
    claims = {claim["deployment"]: claim for claim in store.claims()}
    assert claims["report"]["upstream_run_id"] == upstream["id"]
    assert {claim["state"] for claim in claims.values()} == {"Completed"}
    assert all(claim["exit_code"] == 0 for claim in claims.values())


def test_a_crashing_run_is_recorded_crashed_and_the_service_keeps_going(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    crasher = make_deployment(flows["crasher"], name="crasher")
    hourly = make_deployment(flows["doubler"], name="hourly", interval=3600, anchor=utc(2026, 6, 1))
    clock = Clock(utc(2026, 6, 1, 0, 30))
    target = real_service([crasher, hourly], store, clock=clock)
    target.tick()
    store.request_run("crasher")
    tick_until(target, lambda: bool(store.claims("crasher")) and not target.running, clock)

    (claim,) = store.claims("crasher")
    assert claim["state"] == "Crashed" and claim["exit_code"] == -signal.SIGKILL
    run = store.history.get_flow_run(claim["id"])
    assert run is not None and run["state"] == "Crashed"
    assert run["deployment"] == "crasher"
    assert "its process was killed by SIGKILL before recording a final state" in run["message"]

    clock.now = utc(2026, 6, 1, 1, 0, 0, 300_000)
    tick_until(target, lambda: bool(store.claims("hourly")) and not target.running, clock)
    target.stop()
    (scheduled,) = store.claims("hourly")
    assert scheduled["state"] == "Completed"
    assert store.history.get_flow_run(scheduled["id"])["slot"] == "2026-06-01T01:00:00+00:00"
    states = {run["deployment"]: run["state"] for run in runs_ls(store.path)}
    assert states == {"crasher": "Crashed", "hourly": "Completed"}


def test_max_active_runs_with_real_processes(
    flows: dict[str, Any], store: DeploymentStore, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    minutely = make_deployment(
        flows["gated"], name="gated", interval=60, anchor=utc(2026, 6, 1), parameters={"gate": str(gate)}
    )
    clock = Clock(utc(2026, 6, 1, 0, 0, 30))
    target = real_service([minutely], store, clock=clock)
    target.tick()
    clock.now = utc(2026, 6, 1, 0, 1)
    assert len(target.tick()) == 1
    clock.now = utc(2026, 6, 1, 0, 2)
    assert target.tick() == []  # the 00:01 run is still going
    clock.now = utc(2026, 6, 1, 0, 3)
    assert target.tick() == []
    gate.touch()
    tick_until(target, lambda: len(store.claims("gated")) == 2, clock)  # 00:03 starts; 00:02 was replaced
    tick_until(target, lambda: not target.running, clock)
    target.stop()

    assert runs_per_slot(store.path) == [
        ("gated", "2026-06-01T00:01:00+00:00", 1),
        ("gated", "2026-06-01T00:03:00+00:00", 1),
    ]
    first, second = sorted(runs_ls(store.path), key=lambda run: run["start_time"])
    assert second["start_time"] >= first["end_time"]  # never two at once
    assert first["state"] == second["state"] == "Completed"


def test_restart_mid_slot_starts_exactly_one_run_for_the_slot(
    flows: dict[str, Any], store: DeploymentStore, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    every_20_s = make_deployment(
        flows["gated"], name="gated", interval=20, anchor=utc(2026, 6, 1), parameters={"gate": str(gate)}
    )
    clock = Clock(utc(2026, 6, 1, 0, 0, 10))
    first = real_service([every_20_s], store, clock=clock)
    first.tick()
    clock.now = utc(2026, 6, 1, 0, 0, 20, 100_000)
    assert len(first.tick()) == 1  # then the service "dies": nobody ticks or stops it again
    (running,) = first.running.values()

    second = real_service([every_20_s], store, clock=clock)
    for seconds in (21, 25, 30):  # a restart mid-slot: the slot is taken, the run is alive
        clock.now = utc(2026, 6, 1, 0, 0, seconds)
        assert second.tick() == []
    gate.touch()
    deadline = time.monotonic() + TIMEOUT
    while running.process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    clock.now = utc(2026, 6, 1, 0, 0, 55)  # the first service's lease has run out
    second.tick()  # settles its claim from the history and starts the latest due slot (00:00:40)
    tick_until(second, lambda: not second.running, clock)
    second.stop()

    assert runs_per_slot(store.path) == [
        ("gated", "2026-06-01T00:00:20+00:00", 1),
        ("gated", "2026-06-01T00:00:40+00:00", 1),
    ]
    assert [claim["state"] for claim in store.claims("gated")] == ["Completed", "Completed"]


def serve_process(tmp_path: Path, target: Path, log_name: str, *extra: str) -> subprocess.Popen[str]:
    """`dagrun serve TARGET` on tmp_path/dagrun.db, its output in tmp_path/LOG_NAME."""
    env = {**os.environ, "DAGRUN_DATABASE_URL": str(tmp_path / "dagrun.db"), "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / log_name, "w") as log:
        return subprocess.Popen(
            dagrun_command("serve", str(target), "--poll-interval", "0.2", *extra),
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def descendants(process: subprocess.Popen[str], seen: set[int]) -> None:
    try:
        seen.update(child.pid for child in psutil.Process(process.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        pass


def test_serve_end_to_end_runs_appear_and_sigterm_leaves_no_process(tmp_path: Path) -> None:
    flows_file = write_flows(
        tmp_path,
        """
        from dagrun.deployments import make_deployment
        every_2_s = make_deployment(doubler, name="every-2-s", interval=2, parameters={"x": 3})
        long_one = make_deployment(sleeper, name="long-one", parameters={"seconds": 120})
    """,
    )
    database = tmp_path / "dagrun.db"
    server = serve_process(tmp_path, flows_file, "serve.log", "--grace-period", "2")
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:  # the service registers the deployments, then its runs appear in the history
            descendants(server, seen)
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            if database.exists():
                runs = [run for run in runs_ls(database) if run["deployment"] == "every-2-s"]
                if len([run for run in runs if run["state"] == "Completed"]) >= 2:
                    break
            assert time.monotonic() < deadline, "no scheduled runs appeared"
            time.sleep(0.3)
        queued = subprocess.run(
            dagrun_command("deployments", "run", "long-one"),
            capture_output=True,
            text=True,
            env={**os.environ, "DAGRUN_DATABASE_URL": str(database)},
            timeout=60,
        )
        assert queued.returncode == 0, queued.stderr
        while not any(
            run["deployment"] == "long-one" and run["state"] == "Running" for run in runs_ls(database)
        ):
            descendants(server, seen)
            assert time.monotonic() < deadline, "the long run did not start"
            time.sleep(0.3)
        descendants(server, seen)
        stopped_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert time.monotonic() - stopped_at < 2 + 5 + 5  # grace, then SIGINT and kill_after
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert seen, "the service started no processes"
    assert wait_until_gone(seen, timeout=5) == set()

    runs = runs_ls(database)
    scheduled = [run for run in runs if run["deployment"] == "every-2-s"]
    assert all(run["parameters"] == {"x": 3, "upstream_run_id": None} for run in scheduled)
    assert {run["state"] for run in scheduled} <= {"Completed"}
    (long_run,) = [run for run in runs if run["deployment"] == "long-one"]
    assert long_run["state"] == "Cancelled"
    slots = runs_per_slot(database)
    assert slots and all(count == 1 for _, _, count in slots)
    slot_times = [datetime.fromisoformat(slot) for _, slot, _ in slots]
    assert all(moment.second % 2 == 0 and moment.microsecond == 0 for moment in slot_times)


def test_two_serve_processes_on_one_database_start_each_slot_once(tmp_path: Path) -> None:
    flows_file = write_flows(
        tmp_path,
        """
        from dagrun.deployments import make_deployment
        every_second = make_deployment(doubler, name="every-second", interval=1, max_active_runs=10)
    """,
    )
    database = tmp_path / "dagrun.db"
    DeploymentStore(database).close()  # both start on an existing database
    servers = [
        serve_process(tmp_path, flows_file, f"serve-{index}.log", "--grace-period", "10")
        for index in range(2)
    ]
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for server in servers:
                descendants(server, seen)
                assert server.poll() is None
            time.sleep(0.2)
        for server in servers:
            server.send_signal(signal.SIGTERM)
        assert [server.wait(30) for server in servers] == [0, 0]
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()
                server.wait()
    assert wait_until_gone(seen, timeout=5) == set()

    slots = runs_per_slot(database)
    assert len(slots) >= 4
    assert all(count == 1 for _, _, count in slots), slots
    claims = history_rows(database, "SELECT slot, state FROM deployment_runs ORDER BY slot")
    assert [claim[0] for claim in claims] == [slot for _, slot, _ in slots]  # each claim ran, once
    assert {claim[1] for claim in claims} == {"Completed"}
    # Both served the deployment all along (both wake at each slot; the first to claim it wins).
    services = history_rows(database, "SELECT started_at, stopped_at FROM deployment_services")
    assert len(services) == 2 and all(stopped is not None for _, stopped in services)
