"""The dashboard watched while a real flow runs: `dagrun run` in a child process on a real
LocalCluster, recording into this test's $DAGRUN_HOME, which the real `dagrun server` reads;
the pages are open in headless Chromium (as in `test_dashboard_browser`).

The flow's tasks wait at gates (files) the test opens, so each step is seen on the page while
the run is held there: no timing guesses, only waits for what the page shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from console_script import DAGRUN  # noqa: E402
from dagrun.history import HistoryStore  # noqa: E402
from test_dashboard_browser import (  # noqa: E402, F401 (fixtures)
    DashboardServer,
    browser,
    expect,
    node,
    page,
    playwright_sync,
)

GATED_FLOWS = textwrap.dedent(
    '''
    import os
    import time
    from pathlib import Path

    from dagrun import flow, get_run_logger, task
    from dagrun.executors import DaskExecutor

    GATES = Path(os.environ["GATES"])
    CLUSTER = DaskExecutor(cluster_kwargs={"n_workers": 1, "threads_per_worker": 2})


    def wait_for(gate):
        deadline = time.monotonic() + 300  # never outlive the test that opens the gate
        while not (GATES / gate).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {gate} was never opened")
            time.sleep(0.02)


    @task
    def prepare():
        wait_for("prepare")
        return 2


    @task(retries=1, retry_delay_seconds=0)
    def flaky(x):
        if not (GATES / "flaky-failed").exists():
            (GATES / "flaky-failed").write_text("once")
            raise ConnectionError("first attempt fails")
        return x


    @task
    def work(x):
        get_run_logger().info("read %d files", x)
        wait_for("work")
        return x * 10


    @task
    def publish(x):
        return x + 1


    @flow(name="live_page", executor=CLUSTER)
    def live_page():
        return publish(work(flaky(prepare())))


    @task
    def load():
        get_run_logger().info("read 3 files")
        wait_for("load")
        raise KeyError("id")


    @flow(name="live_logs", executor=CLUSTER)
    def live_logs():
        return load()
    '''
)

START_TIMEOUT_MS = 120_000
"""The run's first row: `dagrun run` imports, starts a LocalCluster and records (slow under load)."""
STEP_TIMEOUT_MS = 30_000
"""A state change on the page: recorded within a second, polled every 1.5 s; generous for load."""

# Counts the dashboard's log requests in the page itself, so a count read right after the
# page's timers ran includes every request they started.
COUNT_LOG_REQUESTS = """
window.logRequests = 0;
const realFetch = window.fetch;
window.fetch = (url, ...rest) => {
    if (String(url).includes("/logs")) window.logRequests += 1;
    return realFetch(url, ...rest);
};
"""


class GatedRun:
    """`dagrun run flows.py:NAME` in its own process group; `open(gate)` lets a task past."""

    def __init__(self, directory: Path, flow_name: str) -> None:
        (directory / "flows.py").write_text(GATED_FLOWS)
        self.gates = directory / "gates"
        self.gates.mkdir()
        self.process = subprocess.Popen(
            [*DAGRUN, "run", f"flows.py:{flow_name}"], cwd=directory,
            env={**os.environ, "GATES": str(self.gates)}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def open(self, gate: str) -> None:
        (self.gates / gate).write_text("open")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stderr

    def kill(self) -> None:
        if self.process.poll() is None:  # the test failed midway: the driver and its cluster
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.communicate()


@pytest.fixture
def server(dagrun_home: Path) -> Iterator[DashboardServer]:
    """`dagrun server` over this test's history, the one `dagrun run` records into."""
    with HistoryStore.from_env() as store:  # created where $DAGRUN_HOME says, as a run would
        database = store.path
    assert database is not None and database.is_relative_to(dagrun_home)
    running = DashboardServer(database)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def gated_run(tmp_path: Path) -> Iterator[Any]:
    runs: list[GatedRun] = []

    def start(flow_name: str) -> GatedRun:
        runs.append(GatedRun(tmp_path, flow_name))
        return runs[-1]

    try:
        yield start
    finally:
        for run in runs:
            run.kill()


def open_the_new_run(page: Any, server: DashboardServer) -> None:
    """From the runs page, as a user would: wait for the run's row, click it."""
    page.goto(server.url)
    row = page.locator("table.runs-table tbody tr[data-run-id]")
    expect(row).to_have_count(1, timeout=START_TIMEOUT_MS)
    expect(row.locator(".badge")).to_have_text("Running", timeout=STEP_TIMEOUT_MS)
    row.locator("a").first.click()


def expect_states(page: Any, **states: str) -> None:
    for task_name, state in states.items():
        expect(node(page, task_name)).to_have_attribute("data-state", state, timeout=STEP_TIMEOUT_MS)


def expect_counts(page: Any, *counts: str) -> None:
    """The run's state counts, e.g. "Completed 2", "Running 1" (in the page's order)."""
    expect(page.locator(".state-counts .count")).to_have_text(list(counts), timeout=STEP_TIMEOUT_MS)


def expect_bars(page: Any, bars: int) -> None:
    """The timeline draws one bar per task run that has started."""
    timeline = page.locator("canvas.gantt-canvas")
    expect(timeline).to_have_attribute("data-bars", str(bars), timeout=STEP_TIMEOUT_MS)


def test_a_real_run_moves_on_its_page_pending_running_completed(
    page: Any, server: DashboardServer, gated_run: Any
) -> None:
    run = gated_run("live_page")
    open_the_new_run(page, server)

    # Held at the first gate: `prepare` runs, the chain after it waits.
    expect_states(page, prepare="Running", flaky="Pending", work="Pending", publish="Pending")
    expect_counts(page, "Pending 3", "Running 1")
    expect_bars(page, 1)
    running = page.locator('table.task-table tr[data-state="Running"]')
    expect(running).to_contain_text("tcp://127.0.0.1:")  # its worker, while it runs
    page.evaluate("window.notReloaded = true")

    run.open("prepare")  # `work` goes Pending -> Running, after `flaky`'s retry
    expect_states(page, prepare="Completed", flaky="Completed", work="Running", publish="Pending")
    expect_counts(page, "Pending 1", "Running 1", "Completed 2")
    expect_bars(page, 3)
    expect(page.locator(".page-header .badge")).to_have_text("Running")

    run.open("work")  # `work` goes Running -> Completed, and the run ends
    expect_states(page, work="Completed", publish="Completed")
    expect_counts(page, "Completed 4")
    expect_bars(page, 4)
    expect(page.locator(".page-header .badge")).to_have_text("Completed", timeout=STEP_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    returncode, stderr = run.finish()
    assert returncode == 0, stderr

    # The retried task keeps each attempt: its start, its duration and how it ended.
    node(page, "flaky").click()
    upstream = page.locator("ul.upstream li")
    expect(upstream).to_have_text(["prepare-0 Completed"])
    attempts = page.locator("table.attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("ConnectionError: first attempt fails")
    expect(attempts.nth(1).locator("td").nth(3)).to_have_text("ok")
    for row in (attempts.nth(0), attempts.nth(1)):
        start, duration = row.locator("td").nth(1), row.locator("td").nth(2)
        expect(start).not_to_have_text("—")
        expect(duration).not_to_have_text("—")


def test_logs_stream_while_a_real_run_goes_and_polling_stops_when_it_ends(
    page: Any, server: DashboardServer, gated_run: Any
) -> None:
    page.add_init_script(COUNT_LOG_REQUESTS)
    page.clock.install()  # time flows as usual; `run_for` below runs the page's timers ahead
    run = gated_run("live_logs")
    open_the_new_run(page, server)
    page.get_by_role("link", name="Logs", exact=True).click()

    lines = page.locator(".log-table tr")
    stream = page.locator(".log-scroll")
    expect(lines.filter(has_text="read 3 files")).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    expect(lines.filter(has_text="KeyError")).to_have_count(0)
    page.evaluate("window.notReloaded = true")
    # While the run goes, the page keeps asking for new lines.
    asked = page.evaluate("window.logRequests")
    page.wait_for_function("(asked) => window.logRequests > asked", arg=asked, timeout=STEP_TIMEOUT_MS)
    expect(stream).to_have_attribute("data-stream", "following")

    run.open("load")  # the task fails, the run ends
    expect(lines.filter(has_text="KeyError: 'id'").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(lines.filter(has_text="Finished in state Failed")).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    expect(stream).to_have_attribute("data-stream", "ended", timeout=STEP_TIMEOUT_MS)
    returncode, _ = run.finish()
    assert returncode != 0

    # Ended, the page stops asking: a minute of its timers starts no request.
    asked = page.evaluate("window.logRequests")
    page.clock.run_for(60_000)
    assert page.evaluate("window.logRequests") == asked

    page.select_option('select[name="level"]', "ERROR")  # read again from the start, once
    expect(page.locator(".log-table tr:not(.level-ERROR)")).to_have_count(0)
    expect(lines.filter(has_text="KeyError: 'id'").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(stream).to_have_attribute("data-stream", "ended")
    assert page.evaluate("window.notReloaded") is True
