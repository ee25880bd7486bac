"""Deployments without real run processes: declaration and YAML errors, the store, and the
service's firing decisions under an injected clock (DST, catch-up, pause, limits, restarts,
two services on one database), the CLI and the JSON API.

The service here launches `FakeProcess`es that end when the test says (or at once), so what
is checked is which runs the service *claims and starts*, by a query over its claims.
`tests/test_serve.py` runs the same service with real `dagrun run` processes. Tests that take
the `database` fixture hold for any database; `tests/test_history_postgres.py` runs them
again on PostgreSQL.

DST dates (2026): America/New_York springs forward Sun 8 March (02:00 EST -> 03:00 EDT) and
falls back Sun 1 November (02:00 EDT -> 01:00 EST); Europe/Berlin springs forward Sun 29
March (02:00 CET -> 03:00 CEST) and falls back Sun 25 October (03:00 CEST -> 02:00 CET).
"""

from __future__ import annotations

import http.client
import json
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from console_script import dagrun

from dagrun.deployments import (
    Deployment,
    DeploymentStore,
    Service,
    Trigger,
    load_deployments,
    make_deployment,
)
from dagrun.deployments.claims import Claim, ClaimResult
from dagrun.errors import ConfigError

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")

FLOWS = textwrap.dedent(
    """
    import os, signal, time
    from pathlib import Path
    from dagrun import flow, task
    from dagrun.executors import InProcessExecutor

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(executor=InProcessExecutor())
    def doubler(x: int = 1, upstream_run_id: str | None = None) -> int:
        return double(x)

    @flow(executor=InProcessExecutor())
    def gated(gate: str, x: int = 0) -> int:
        # Runs until the file `gate` exists: the test decides when the run ends.
        while not Path(gate).exists():
            time.sleep(0.05)
        return x

    @flow(executor=InProcessExecutor())
    def crasher() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    @flow(executor=InProcessExecutor())
    def report(upstream_run_id: str) -> str:
        return upstream_run_id

    @flow(executor=InProcessExecutor())
    def sleeper(seconds: float = 60.0) -> None:
        time.sleep(seconds)
    """
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write_flows(directory: Path, extra: str = "") -> Path:
    path = directory / "flows.py"
    path.write_text(FLOWS + textwrap.dedent(extra))
    return path


def flows_module(tmp_path: Path) -> dict[str, Any]:
    """The test flows as objects (imported the way `dagrun serve` imports a file)."""
    from dagrun.deployments.loading import _import

    module = _import(write_flows(tmp_path))
    return {name: getattr(module, name) for name in ("doubler", "gated", "crasher", "report", "sleeper")}


class Clock:
    """An injectable clock: `clock()` is `now` until the test moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class FakeProcess:
    """A run process that ends when `end(code)` is called (or at once, with `ends_at_once`)."""

    pid = 999_999

    def __init__(self, command: list[str], env: dict[str, str], ends_at_once: bool) -> None:
        self.command = command
        self.env = env
        self.code: int | None = 0 if ends_at_once else None
        self.signals: list[str] = []

    def poll(self) -> int | None:
        return self.code

    def end(self, code: int = 0) -> None:
        self.code = code

    def interrupt(self) -> None:
        self.signals.append("SIGINT")

    def kill(self) -> None:
        self.signals.append("SIGKILL")
        self.code = -9


class FakeLauncher:
    """Records what the service launches instead of starting processes."""

    def __init__(self, ends_at_once: bool = True) -> None:
        self.ends_at_once = ends_at_once
        self.processes: list[FakeProcess] = []

    def __call__(self, command: list[str], env: dict[str, str], log_path: Path) -> FakeProcess:
        process = FakeProcess(command, env, self.ends_at_once)
        self.processes.append(process)
        return process

    @property
    def slots(self) -> list[str]:
        """The slots of the scheduled runs launched, in launch order."""
        return [
            process.env["DAGRUN_DEPLOYMENT_SLOT"]
            for process in self.processes
            if "DAGRUN_DEPLOYMENT_SLOT" in process.env
        ]


@pytest.fixture
def flows(tmp_path: Path) -> dict[str, Any]:
    return flows_module(tmp_path)


@pytest.fixture
def database(tmp_path: Path) -> str:
    """The URL of a new, empty database (here an SQLite file that does not exist yet)."""
    return str(tmp_path / "dagrun.db")


@pytest.fixture
def store(database: str) -> Iterator[DeploymentStore]:
    with DeploymentStore(database) as opened:
        yield opened


def service(deployments: list[Deployment], store: DeploymentStore, clock: Clock, **options: Any) -> Service:
    options.setdefault("launcher", FakeLauncher())
    return Service(deployments, store, clock=clock, **options)


def run_ticks(target: Service, clock: Clock, until: datetime, step: timedelta) -> None:
    while clock.now <= until:
        target.tick()
        clock.now += step


def claimed_slots(store: DeploymentStore, deployment: str) -> list[datetime]:
    return sorted(
        datetime.fromisoformat(claim["slot"]) for claim in store.claims(deployment) if claim["slot"]
    )


def walls(slots: list[datetime], zone: ZoneInfo) -> list[str]:
    return [slot.astimezone(zone).strftime("%m-%d %H:%M%z") for slot in slots]


def duplicate_slots(store: DeploymentStore) -> list[dict[str, Any]]:
    """Every slot claimed more than once, with its count: must be empty."""
    with store.history.read_transaction() as connection:
        rows: list[dict[str, Any]] = connection.execute(
            "SELECT deployment, slot, COUNT(*) AS claims FROM deployment_runs WHERE slot IS NOT NULL "
            "GROUP BY deployment, slot HAVING COUNT(*) > 1"
        ).fetchall()
    return rows


# --- declaration -------------------------------------------------------------------------


def test_make_deployment_validates_and_normalizes(flows: dict[str, Any]) -> None:
    nightly = make_deployment(
        flows["doubler"], name="nightly", cron="0 2 * * *", timezone="Europe/Berlin", parameters={"x": 3}
    )
    assert nightly.parameters == {"x": 3}
    assert nightly.describe_schedule() == "cron '0 2 * * *' (Europe/Berlin)"
    assert nightly.flow_file is not None and nightly.flow_file.endswith("flows.py")
    both = make_deployment(flows["doubler"], name="both", cron="@hourly", interval=timedelta(minutes=30))
    assert len(both.schedules) == 2
    manual = make_deployment(flows["doubler"], name="manual")
    assert manual.schedules == () and manual.describe_schedule() == "manual runs only"
    chained = make_deployment(flows["report"], name="chained", triggers=[Trigger(after_deployment="nightly")])
    assert chained.describe_schedule() == "triggers only"
    assert chained.triggers[0].states == ("Completed",)
    assert Trigger(after_flow="etl", states=["failed", "CRASHED"]).states == ("Failed", "Crashed")


@pytest.mark.parametrize(
    "flow_name, options, message",
    [
        ("doubler", {"cron": "61 * * * *"}, "deployment 'bad': cron '61 * * * *' is invalid"),
        ("doubler", {"cron": "0 2 * *"}, "deployment 'bad': cron '0 2 * *' is invalid: expected 5 fields"),
        (
            "doubler",
            {"cron": "0 2 * * *", "timezone": "Mars/Olympus"},
            "deployment 'bad': timezone 'Mars/Olympus' is unknown",
        ),
        ("doubler", {"timezone": "Europe/Berln"}, "deployment 'bad': timezone 'Europe/Berln' is unknown"),
        ("doubler", {"interval": 0}, "deployment 'bad': interval must be > 0 seconds, got 0"),
        ("doubler", {"interval": -5}, "deployment 'bad': interval must be > 0 seconds, got -5"),
        ("doubler", {"interval": timedelta(0)}, "deployment 'bad': interval must be > 0 seconds"),
        ("doubler", {"rrule": "FREQ=SOMETIMES"}, "deployment 'bad': rrule 'FREQ=SOMETIMES' is invalid"),
        (
            "doubler",
            {"parameters": {"x": "not a number"}},
            "deployment 'bad': parameters do not validate: Invalid parameters for flow 'doubler': "
            "parameter 'x' expected int",
        ),
        (
            "doubler",
            {"parameters": {"y": 1}},
            "deployment 'bad': parameters do not validate: "
            "Flow 'doubler': got an unexpected keyword argument 'y'",
        ),
        (
            "gated",
            {},
            "deployment 'bad': parameters do not validate: Flow 'gated': missing a required argument: 'gate'",
        ),
        ("doubler", {"parameters": {"x": {1, 2}}}, "deployment 'bad': parameters must be JSON values"),
        (
            "doubler",
            {"max_active_runs": 0},
            "deployment 'bad': max_active_runs must be an integer >= 1, got 0",
        ),
        ("doubler", {"catchup": "yes"}, "deployment 'bad': catchup must be true or false, got 'yes'"),
        (
            "doubler",
            {"anchor": utc(2026, 1, 1), "cron": "@daily"},
            "deployment 'bad': anchor applies only to an interval schedule",
        ),
        (
            "gated",
            {"parameters": {"gate": "g"}, "triggers": [Trigger(after_flow="etl")]},
            "deployment 'bad': triggers: flow 'gated' has no parameter 'upstream_run_id'",
        ),
    ],
)
def test_bad_declarations_fail_with_one_line_naming_deployment_and_field(
    flows: dict[str, Any], flow_name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        make_deployment(flows[flow_name], name="bad", **options)
    text = str(error.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_bad_triggers_fail_at_declaration() -> None:
    with pytest.raises(ConfigError, match="give exactly one of after_deployment, after_flow"):
        Trigger()
    with pytest.raises(ConfigError, match="state 'Running' is not a final state"):
        Trigger(after_deployment="a", states=("Running",))
    with pytest.raises(ConfigError, match="parameter must be a parameter name or None"):
        Trigger(after_deployment="a", parameter="not a name")


def test_a_python_file_serves_its_top_level_deployments_and_names_must_be_unique(tmp_path: Path) -> None:
    path = write_flows(
        tmp_path,
        """
        from dagrun.deployments import make_deployment, Trigger
        hourly = make_deployment(doubler, name="hourly", interval=3600, parameters={"x": 2})
        alias = hourly
        after = make_deployment(report, name="after", triggers=[Trigger(after_deployment="hourly")])
    """,
    )
    deployments = load_deployments(path)
    assert [deployment.name for deployment in deployments] == ["hourly", "after"]
    assert deployments[0].flow_file == str(path.resolve())

    path.write_text(path.read_text() + 'again = make_deployment(doubler, name="hourly", interval=60)\n')
    with pytest.raises(ConfigError) as error:
        load_deployments(path)
    assert str(error.value) == f"{path}: deployment 'hourly': name: two deployments are named 'hourly'"

    path.write_text(
        FLOWS + "from dagrun.deployments import make_deployment\n"
        'bad = make_deployment(doubler, name="bad", cron="* * *")\n'
    )
    with pytest.raises(ConfigError, match=r"flows\.py: deployment 'bad': cron '\* \* \*' is invalid"):
        load_deployments(path)

    path.write_text(FLOWS + "broken = undefined_name\n")
    with pytest.raises(ConfigError) as error:
        load_deployments(path)
    line = len(FLOWS.splitlines()) + 1
    assert str(error.value) == f"{path}: line {line}: NameError: name 'undefined_name' is not defined"


def test_deployments_yaml_loads_flows_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    write_flows(tmp_path / "pipelines")
    config = tmp_path / "deployments.yaml"
    config.write_text(
        textwrap.dedent("""
        deployments:
          - name: nightly
            flow: pipelines/flows.py:doubler
            cron: "30 1 * * *"
            timezone: America/New_York
            parameters: {x: 4}
            catchup: true
            max_active_runs: 2
          - name: every-minute
            flow: pipelines/flows.py:doubler
            interval: 60
            anchor: 2026-01-01T00:00:30Z
          - name: after-nightly
            flow: pipelines/flows.py:report
            triggers:
              - after_deployment: nightly
                states: [Completed, Failed]
    """)
    )
    nightly, minutely, after = load_deployments(config)
    assert nightly.flow_file == str((tmp_path / "pipelines" / "flows.py").resolve())
    assert nightly.parameters == {"x": 4} and nightly.catchup and nightly.max_active_runs == 2
    assert minutely.schedules[0].next_slots(utc(2026, 3, 1, 12, 0, 0), 1) == [utc(2026, 3, 1, 12, 0, 30)]
    assert after.triggers == (Trigger(after_deployment="nightly", states=("Completed", "Failed")),)


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "  - name: a\n    flow: flows.py:doubler\n    cronn: '@daily'\n",
            "deployment 'a': unknown key 'cronn'",
        ),
        ("  - name: a\n    cron: '@daily'\n", "deployment 'a': flow: missing"),
        ("  - name: a\n    flow: nowhere.py:doubler\n", "deployment 'a': flow: no such file 'nowhere.py'"),
        ("  - name: a\n    flow: flows.py:nope\n", "deployment 'a': flow: no flow 'nope' in flows.py"),
        (
            "  - name: a\n    flow: flows.py:doubler\n    cron: '0 25 * * *'\n",
            "deployment 'a': cron '0 25 * * *' is invalid",
        ),
        (
            "  - name: a\n    flow: flows.py:doubler\n    interval: -1\n",
            "deployment 'a': interval must be > 0 seconds",
        ),
        (
            "  - name: a\n    flow: flows.py:doubler\n    cron: '@daily'\n    timezone: Nowhere/City\n",
            "deployment 'a': timezone 'Nowhere/City' is unknown",
        ),
        (
            "  - name: a\n    flow: flows.py:doubler\n    parameters: {x: many}\n",
            "deployment 'a': parameters do not validate",
        ),
        (
            "  - name: a\n    flow: flows.py:doubler\n  - name: a\n    flow: flows.py:doubler\n",
            "deployment 'a': name: two deployments are named 'a'",
        ),
        (
            "  - name: a\n    flow: flows.py:doubler\n    interval: 60\n    anchor: 2026-01-01T00:00:00\n",
            "deployment 'a': anchor: 2026-01-01T00:00:00 has no timezone",
        ),
        (
            "  - name: a\n    flow: flows.py:doubler\n    triggers:\n      - after: b\n",
            "deployment 'a': triggers[0]: unknown key 'after'",
        ),
        ("  - flow: flows.py:doubler\n", "deployments[0]: name: expected a non-empty string"),
    ],
)
def test_deployments_yaml_errors_name_the_file_deployment_and_key(
    tmp_path: Path, entry: str, message: str
) -> None:
    write_flows(tmp_path)
    config = tmp_path / "deployments.yaml"
    config.write_text("deployments:\n" + entry)
    with pytest.raises(ConfigError) as error:
        load_deployments(config)
    text = str(error.value)
    assert text.startswith(f"{config}: "), text
    assert message in text
    assert "\n" not in text


# --- the service's firing decisions, with an injected clock --------------------------------


@pytest.mark.parametrize(
    "zone, cron, start, end, expected",
    [
        # Fall-back: 01:30 happens twice in New York on 1 November; the job runs once.
        (
            NEW_YORK,
            "30 1 * * *",
            (2026, 10, 31, 0),
            (2026, 11, 2, 12),
            ["10-31 01:30-0400", "11-01 01:30-0400", "11-02 01:30-0500"],
        ),
        # Spring-forward: 02:30 does not exist on 8 March; the job runs once, at 03:00.
        (
            NEW_YORK,
            "30 2 * * *",
            (2026, 3, 7, 0),
            (2026, 3, 9, 12),
            ["03-07 02:30-0500", "03-08 03:00-0400", "03-09 02:30-0400"],
        ),
        (
            BERLIN,
            "30 2 * * *",
            (2026, 3, 28, 0),
            (2026, 3, 30, 12),
            ["03-28 02:30+0100", "03-29 03:00+0200", "03-30 02:30+0200"],
        ),
        (
            BERLIN,
            "30 2 * * *",
            (2026, 10, 24, 0),
            (2026, 10, 26, 12),
            ["10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"],
        ),
    ],
)
def test_cron_slots_across_dst_are_fired_once_each(
    flows: dict[str, Any],
    store: DeploymentStore,
    zone: ZoneInfo,
    cron: str,
    start: tuple[int, ...],
    end: tuple[int, ...],
    expected: list[str],
) -> None:
    daily = make_deployment(flows["doubler"], name="daily", cron=cron, timezone=str(zone))
    clock = Clock(datetime(*start, tzinfo=zone).astimezone(UTC))
    launcher = FakeLauncher()
    target = service([daily], store, clock, launcher=launcher)
    run_ticks(target, clock, datetime(*end, tzinfo=zone).astimezone(UTC), timedelta(minutes=10))
    slots = claimed_slots(store, "daily")
    assert walls(slots, zone) == expected
    assert sorted(launcher.slots) == [slot.isoformat() for slot in slots]  # one process per slot
    assert all(claim["state"] == "Completed" for claim in store.claims("daily"))


def test_hourly_cron_and_interval_across_fall_back_fire_every_real_hour(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    # The local day of 25 October 2026 in Berlin has 25 hours, 1 November in New York too.
    hourly = make_deployment(
        flows["doubler"], name="hourly-berlin", cron="0 * * * *", timezone="Europe/Berlin"
    )
    interval = make_deployment(
        flows["doubler"],
        name="interval-ny",
        interval=3600,
        timezone="America/New_York",
        anchor=utc(2026, 1, 1, 0, 15),
    )
    clock = Clock(utc(2026, 10, 24, 21, 55))
    target = service([hourly, interval], store, clock, poll_interval=1.0)
    run_ticks(target, clock, utc(2026, 11, 2, 5, 0), timedelta(minutes=20))

    berlin = claimed_slots(store, "hourly-berlin")
    october_25 = [slot for slot in berlin if slot.astimezone(BERLIN).date().isoformat() == "2026-10-25"]
    assert len(october_25) == 25
    assert walls(october_25, BERLIN)[2:4] == ["10-25 02:00+0200", "10-25 02:00+0100"]
    ny = claimed_slots(store, "interval-ny")
    november_1 = [slot for slot in ny if slot.astimezone(NEW_YORK).date().isoformat() == "2026-11-01"]
    assert len(november_1) == 25
    for slots in (berlin, ny):
        assert all(later - earlier == timedelta(hours=1) for earlier, later in pairwise(slots))
    assert duplicate_slots(store) == []


@pytest.mark.parametrize(
    "catchup, max_catchup, expected_hours",
    [
        (False, 100, [5]),
        (True, 100, [1, 2, 3, 4, 5]),
        (True, 3, [3, 4, 5]),
    ],
)
def test_catch_up_after_downtime(
    flows: dict[str, Any], store: DeploymentStore, catchup: bool, max_catchup: int, expected_hours: list[int]
) -> None:
    hourly = make_deployment(
        flows["doubler"],
        name="hourly",
        interval=3600,
        anchor=utc(2026, 6, 1),
        catchup=catchup,
        max_active_runs=10,
    )
    clock = Clock(utc(2026, 6, 1, 0, 10))
    first = service([hourly], store, clock, max_catchup=max_catchup)
    assert first.tick() == []  # registered at 00:10: the 00:00 slot is from before it existed
    first.stop(grace_period=0)

    clock.now = utc(2026, 6, 1, 5, 30)  # back after five missed slots
    second = service([hourly], store, clock, max_catchup=max_catchup)
    started = second.tick()
    assert len(started) == len(expected_hours)
    assert claimed_slots(store, "hourly") == [utc(2026, 6, 1, hour) for hour in expected_hours]
    assert second.tick() == []  # nothing more is due until 06:00
    clock.now = utc(2026, 6, 1, 6)
    assert len(second.tick()) == 1


def test_catch_up_with_one_active_run_queues_the_missed_slots_oldest_first(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    hourly = make_deployment(
        flows["doubler"], name="hourly", interval=3600, anchor=utc(2026, 6, 1), catchup=True
    )
    clock = Clock(utc(2026, 6, 1, 0, 10))
    launcher = FakeLauncher(ends_at_once=False)
    target = service([hourly], store, clock, launcher=launcher)
    target.tick()
    clock.now = utc(2026, 6, 1, 3, 30)
    for expected in ("01:00", "02:00", "03:00"):
        target.tick()
        assert launcher.slots[-1].startswith(f"2026-06-01T{expected}")
        assert target.tick() == []  # max_active_runs=1: the next missed slot waits
        launcher.processes[-1].end(0)
    target.tick()
    assert len(launcher.processes) == 3


def test_max_active_runs_holds_back_slots_and_a_newer_slot_replaces_a_waiting_one(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    every_minute = make_deployment(
        flows["doubler"], name="busy", interval=60, anchor=utc(2026, 6, 1), max_active_runs=2
    )
    clock = Clock(utc(2026, 6, 1, 0, 0, 30))
    launcher = FakeLauncher(ends_at_once=False)
    target = service([every_minute], store, clock, launcher=launcher)
    target.tick()
    for _ in range(4):  # 00:01 .. 00:04: two start, then the limit holds
        clock.advance(minutes=1)
        target.tick()
    assert launcher.slots == ["2026-06-01T00:01:00+00:00", "2026-06-01T00:02:00+00:00"]
    assert store.summaries(clock.now)[0]["active_runs"] == 2
    launcher.processes[0].end(0)
    clock.advance(seconds=10)
    target.tick()  # one finished: the latest due slot (00:04) starts, 00:03 is skipped
    assert launcher.slots[-1] == "2026-06-01T00:04:00+00:00"
    assert len(launcher.processes) == 3


def test_paused_deployment_skips_slots_and_resumes_without_replaying_them(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    hourly = make_deployment(
        flows["doubler"], name="hourly", interval=3600, anchor=utc(2026, 6, 1), catchup=True
    )
    clock = Clock(utc(2026, 6, 1, 0, 30))
    launcher = FakeLauncher()
    target = service([hourly], store, clock, launcher=launcher)
    target.tick()
    store.set_paused("hourly", True)
    assert store.summaries(clock.now)[0]["next_runs"] == []
    store.request_run("hourly", {"x": 7}, requested_by="test")
    clock.now = utc(2026, 6, 1, 3, 30)
    target.tick()  # slots 01:00-03:00 are skipped; the manual run still starts
    assert [process.env.get("DAGRUN_DEPLOYMENT_SLOT") for process in launcher.processes] == [None]
    assert launcher.processes[0].command[-2:] == ["--param", "x=7"]
    store.set_paused("hourly", False)
    clock.now = utc(2026, 6, 1, 3, 45)
    assert target.tick() == []
    clock.now = utc(2026, 6, 1, 4)
    target.tick()
    assert launcher.slots == ["2026-06-01T04:00:00+00:00"]


def test_manual_requests_are_validated_by_the_service(flows: dict[str, Any], store: DeploymentStore) -> None:
    manual = make_deployment(flows["doubler"], name="manual", parameters={"x": 2})
    clock = Clock(utc(2026, 6, 1))
    launcher = FakeLauncher()
    target = service([manual], store, clock, launcher=launcher)
    target.tick()
    good = store.request_run("manual", {"x": 5})
    bad = store.request_run("manual", {"x": "five"})
    target.tick()
    assert len(launcher.processes) == 1
    command, env = launcher.processes[0].command, launcher.processes[0].env
    assert command[-4:] == ["run", f"{manual.flow_file}:doubler", "--param", "x=5"]
    assert env["DAGRUN_DEPLOYMENT"] == "manual" and "DAGRUN_DEPLOYMENT_SLOT" not in env
    assert env["DAGRUN_FLOW_RUN_ID"] == store.claims("manual")[0]["id"]
    requests = {request["id"]: request for request in store.requests("manual")}
    assert requests[good]["flow_run_id"] == env["DAGRUN_FLOW_RUN_ID"]
    assert "parameter 'x' expected int" in requests[bad]["error"]
    assert requests[bad]["error"].startswith(f"manual run request {bad} of deployment 'manual': ")
    with pytest.raises(ConfigError, match="No deployment 'nope' \\(registered: manual\\)"):
        store.request_run("nope")


def test_restart_mid_slot_starts_no_second_run(flows: dict[str, Any], store: DeploymentStore) -> None:
    every_20_s = make_deployment(flows["doubler"], name="often", interval=20, anchor=utc(2026, 6, 1))
    clock = Clock(utc(2026, 6, 1, 0, 0, 10))
    first_launcher = FakeLauncher(ends_at_once=False)
    first = service([every_20_s], store, clock, launcher=first_launcher)
    first.tick()
    clock.now = utc(2026, 6, 1, 0, 0, 20, 200_000)
    assert len(first.tick()) == 1  # 00:00:20 starts, then the service dies without stopping

    second_launcher = FakeLauncher()
    second = service([every_20_s], store, clock, launcher=second_launcher)
    clock.now = utc(2026, 6, 1, 0, 0, 21)
    second.tick()
    assert second_launcher.processes == []  # 00:00:20 is taken
    clock.now = utc(2026, 6, 1, 0, 0, 40, 100_000)
    second.tick()  # the first service's lease (30 s) runs to 00:00:50: its run still counts
    assert second_launcher.processes == []
    clock.now = utc(2026, 6, 1, 0, 0, 55)
    second.tick()  # now it is gone: its run is settled (no record of it: Crashed), 00:00:40 starts
    assert second_launcher.slots == ["2026-06-01T00:00:40+00:00"]
    claims = {claim["slot"]: claim for claim in store.claims("often")}
    assert claims["2026-06-01T00:00:20+00:00"]["state"] == "Crashed"
    assert duplicate_slots(store) == []


def test_a_claim_whose_service_died_before_starting_it_is_started_once_by_another(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    every_minute = make_deployment(flows["doubler"], name="minutely", interval=60, anchor=utc(2026, 6, 1))
    clock = Clock(utc(2026, 6, 1, 0, 0, 30))

    def dies_while_starting(command: list[str], env: dict[str, str], log_path: Path) -> FakeProcess:
        raise SystemExit("killed between claiming and starting")

    first = service([every_minute], store, clock, launcher=dies_while_starting)
    first.tick()
    clock.now = utc(2026, 6, 1, 0, 1)
    with pytest.raises(SystemExit):
        first.tick()
    assert store.claims("minutely")[0]["state"] == "Pending"

    launcher = FakeLauncher()
    second = service([every_minute], store, clock, launcher=launcher)
    clock.now = utc(2026, 6, 1, 0, 1, 10)
    second.tick()
    assert launcher.processes == []  # the first service may still be alive
    clock.now = utc(2026, 6, 1, 0, 1, 45)
    second.tick()
    assert launcher.slots == ["2026-06-01T00:01:00+00:00"]  # taken over, started once
    second.tick()
    assert len(launcher.processes) == 1


def test_two_services_on_one_database_start_each_slot_once(flows: dict[str, Any], database: str) -> None:
    every_minute = make_deployment(
        flows["doubler"], name="minutely", interval=60, anchor=utc(2026, 6, 1), max_active_runs=100
    )
    clock = Clock(utc(2026, 6, 1, 0, 0, 30))
    stores = [DeploymentStore(database) for _ in range(2)]
    launchers = [FakeLauncher(), FakeLauncher()]
    services = [service([every_minute], stores[i], clock, launcher=launchers[i]) for i in range(2)]
    for target in services:
        target.register()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def ticker(target: Service, moments: list[datetime]) -> None:
        try:
            for moment in moments:
                barrier.wait()
                target.tick(moment)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    moments = [utc(2026, 6, 1, 0, minute, second) for minute in range(1, 31) for second in (0, 1)]
    threads = [threading.Thread(target=ticker, args=(target, moments)) for target in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    started = launchers[0].slots + launchers[1].slots
    assert sorted(started) == [utc(2026, 6, 1, 0, minute).isoformat() for minute in range(1, 31)]
    assert launchers[0].slots and launchers[1].slots  # both took part
    assert duplicate_slots(stores[0]) == []
    for opened in stores:
        opened.close()


def test_racing_claimers_claim_each_slot_and_request_once_and_respect_the_limit(
    flows: dict[str, Any], database: str
) -> None:
    """Four claimers, each with its own connection, claim together: the same slots and manual
    requests of one deployment, and each its own slots of one limited to three active runs."""
    shared = make_deployment(flows["doubler"], name="shared", interval=60, max_active_runs=1000)
    limited = make_deployment(flows["doubler"], name="limited", interval=60, max_active_runs=3)
    stores = [DeploymentStore(database) for _ in range(4)]
    stores[0].register([shared, limited], utc(2026, 6, 1))
    requests = [stores[0].request_run("shared", {"x": n}) for n in range(10)]
    slots = [utc(2026, 6, 1, 0, minute).isoformat() for minute in range(20)]
    barrier = threading.Barrier(len(stores))
    won: dict[tuple[str, Any], list[int]] = {}
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        claims = [Claim(f"{n}-slot-{slot}", "shared", "schedule", slot=slot) for slot in slots]
        claims += [Claim(f"{n}-request-{request_id}", "shared", "manual", request_id=request_id)
                   for request_id in requests]
        claims += [Claim(f"{n}-limited-{k}", "limited", "schedule", slot=utc(2026, 6, 1, n, k).isoformat())
                   for k in range(5)]
        try:
            for claim in claims:
                barrier.wait()
                limit = 3 if claim.deployment == "limited" else 1000
                result = stores[n].claim(claim, service_id=f"service-{n}", now=utc(2026, 6, 1), max_active_runs=limit)
                key = (claim.deployment, claim.slot or claim.request_id)
                winners = won.setdefault(key, [])
                if result is ClaimResult.CLAIMED:
                    winners.append(n)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        shared_winners = {key: winners for key, winners in won.items() if key[0] == "shared"}
        assert sorted(len(winners) for winners in shared_winners.values()) == [1] * 30
        assert sum(len(winners) for key, winners in won.items() if key[0] == "limited") == 3
        requested = {request["id"]: request["flow_run_id"] for request in stores[1].requests("shared")}
        assert requested == {
            request_id: f"{won[('shared', request_id)][0]}-request-{request_id}" for request_id in requests
        }
        assert len(stores[2].claims("shared")) == 30 and duplicate_slots(stores[3]) == []
    finally:
        for opened in stores:
            opened.close()


def test_stop_interrupts_then_kills_what_outlives_the_grace_period(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    manual = make_deployment(flows["doubler"], name="manual")
    clock = Clock(utc(2026, 6, 1))
    launcher = FakeLauncher(ends_at_once=False)
    target = service([manual], store, clock, launcher=launcher, kill_after=0.2)
    target.tick()
    store.request_run("manual")
    target.tick()
    target.stop(grace_period=0.2)
    assert launcher.processes[0].signals == ["SIGINT", "SIGKILL"]
    claim = store.claims("manual")[0]
    assert claim["state"] == "Cancelled"
    assert claim["message"] == (
        "Cancelled: `dagrun serve` stopped and the run did not finish within the 0.2 s grace period"
    )
    assert store.history.get_flow_run(claim["id"])["state"] == "Cancelled"
    assert store.live_services(clock.now) == []


def test_trigger_fires_once_per_upstream_run_with_its_id(
    flows: dict[str, Any], store: DeploymentStore
) -> None:
    from dagrun.history import FlowRunStarted, FlowRunState

    upstream = make_deployment(flows["doubler"], name="extract")
    downstream = make_deployment(
        flows["report"], name="report", triggers=[Trigger(after_deployment="extract")]
    )
    on_failure = make_deployment(
        flows["report"], name="alert", triggers=[Trigger(after_flow="doubler", states=("Failed",))]
    )
    clock = Clock(utc(2026, 6, 1))
    launcher = FakeLauncher()
    target = service([upstream, downstream, on_failure], store, clock, launcher=launcher)
    target.tick()

    def record(run_id: str, state: str, deployment: str | None) -> None:
        store.history.apply(
            [
                FlowRunStarted(
                    run_id,
                    "doubler",
                    f"doubler-{run_id[:6]}",
                    {},
                    time.time(),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    deployment=deployment,
                ),
                FlowRunState(run_id, state, time.time()),
            ]
        )

    record("a" * 32, "Completed", "extract")
    record("b" * 32, "Failed", None)
    record("c" * 32, "Failed", "extract")  # not Completed: no report; a doubler run: alert
    target.tick()
    target.tick()
    by_deployment = sorted(
        (process.env["DAGRUN_DEPLOYMENT"], process.command[-1]) for process in launcher.processes
    )
    assert by_deployment == [
        ("alert", "upstream_run_id=" + "b" * 32),  # a str parameter: passed raw
        ("alert", "upstream_run_id=" + "c" * 32),
        ("report", "upstream_run_id=" + "a" * 32),
    ]


# --- CLI and API ---------------------------------------------------------------------------


def test_cli_lists_runs_pauses_and_resumes(
    flows: dict[str, Any], store: DeploymentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGRUN_DATABASE_URL", str(store.path))
    nightly = make_deployment(flows["doubler"], name="nightly", cron="0 2 * * *", timezone="Europe/Berlin")
    store.register([nightly], datetime.now(UTC))
    listed = dagrun("deployments", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["schedule"] == "cron '0 2 * * *' (Europe/Berlin)"
    assert len(entry["next_runs"]) == 3
    assert all(datetime.fromisoformat(slot).astimezone(BERLIN).hour == 2 for slot in entry["next_runs"])
    assert entry["last_run"] is None and entry["paused"] is False

    table = dagrun("deployments", "ls")
    assert table.stdout.splitlines()[0].split() == [
        "NAME",
        "FLOW",
        "SCHEDULE",
        "NEXT",
        "RUNS",
        "LAST",
        "RUN",
        "PAUSED",
    ]
    queued = dagrun("deployments", "run", "nightly", "--param", "x=5")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith("Queued manual run request 1 of deployment 'nightly' with {\"x\": 5}")
    assert store.requests("nightly")[0]["parameters"] == {"x": 5}
    assert dagrun("deployments", "pause", "nightly").returncode == 0
    assert store.get("nightly")["paused"] is True
    assert dagrun("deployments", "resume", "nightly").returncode == 0
    assert store.get("nightly")["paused"] is False
    missing = dagrun("deployments", "pause", "nope")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1, missing.stderr
    assert missing.stderr.startswith("Error: No deployment 'nope' (registered: nightly)")


def api(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            method,
            path,
            body=None if method == "GET" else json.dumps(body or {}),
            headers={"X-Dagrun-Request": "1", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_api_lists_queues_pauses_and_resumes(flows: dict[str, Any], store: DeploymentStore) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_server_api import ServerThread

    from dagrun.server import make_app

    manual = make_deployment(flows["doubler"], name="nightly", cron="@daily", parameters={"x": 2})
    store.register([manual], datetime.now(UTC))
    with ServerThread(make_app(store.history)) as server:
        status, listed = api(server.port, "GET", "/api/deployments")
        assert status == 200
        assert [entry["name"] for entry in listed] == ["nightly"]
        assert listed[0]["parameter_schema"][0] == {
            "name": "x",
            "type": "int",
            "default": 1,
            "required": False,
        }
        status, queued = api(server.port, "POST", "/api/deployments/nightly/run", {"parameters": {"x": 9}})
        assert (status, queued["parameters"]) == (202, {"x": 9})
        _, listed = api(server.port, "GET", "/api/deployments")
        assert [request["id"] for request in listed[0]["pending_requests"]] == [queued["request_id"]]
        assert api(server.port, "POST", "/api/deployments/nightly/pause") == (
            200,
            {"deployment": "nightly", "paused": True},
        )
        assert store.get("nightly")["paused"] is True
        assert api(server.port, "POST", "/api/deployments/nightly/resume")[1]["paused"] is False
        status, error = api(server.port, "POST", "/api/deployments/nope/run", {"parameters": {}})
        assert status == 404 and "No deployment 'nope'" in error["error"]
        status, error = api(server.port, "POST", "/api/deployments/nightly/run", {"parameters": [1]})
        assert status == 400
