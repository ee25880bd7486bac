"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The server is the real `dagrun server` (the console script) on 127.0.0.1 (random port) over
an SQLite file that this process writes to while pages are open, as a running flow's driver
would. Screenshots (for looking at a failure) go to $DAGRUN_SCREENSHOT_DIR when it is set, else
to the test's temporary directory; the docs' screenshots come from real runs
(`docs/make_screenshots.py`). A real run watched while it goes: `test_dashboard_live`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dagrun.history import (
    FlowRunState,
    HistoryStore,
    TaskRunCreated,
    TaskRunState,
)

sys.path.insert(0, str(Path(__file__).parent))
from console_script import DAGRUN, running_server  # noqa: E402
from real_parts import require_module, require_part  # noqa: E402
from test_server_api import History, new_id, record_history, started  # noqa: E402

CHROMIUM = Path(os.environ.get("DAGRUN_TEST_CHROMIUM", "/usr/bin/chromium"))
"""Debian's Chromium (Playwright never downloads a browser); DAGRUN_TEST_CHROMIUM names another."""

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LARGE_RUN_TASKS = 5000
LOAD_BUDGET_SECONDS = 2.0
UPDATE_TIMEOUT_MS = 10_000


def record_large_run(store: HistoryStore) -> str:
    """A finished 5,000-task run: extract -> 2,000 transform -> 2,000 validate -> 998
    aggregate (two validates each) -> report, on 4 workers, with 3 validates failed."""
    run = new_id()
    t0 = time.time() - 7200
    events: list[Any] = [started(run, "big", t0, shards=2000)]
    finished: list[Any] = []

    def add(name: str, index: int, upstream: tuple[str, ...], start: float, state: str) -> str:
        task_run_id = new_id()
        events.append(TaskRunCreated(task_run_id, run, name, f"{name}-{index}", upstream, None, t0))
        finished.append(TaskRunState(task_run_id, "Running", start, attempt=1,
                                     worker=f"tcp://127.0.0.1:{41000 + index % 4}"))
        error = "ValueError: shard is empty" if state == "Failed" else None
        finished.append(TaskRunState(task_run_id, state, start + 0.5 + (index % 7) * 0.1,
                                     error=error))
        return task_run_id

    extract = add("extract", 0, (), t0, "Completed")
    transforms = [add("transform", i, (extract,), t0 + 1 + i * 0.01, "Completed")
                  for i in range(2000)]
    validates = [add("validate", i, (transforms[i],), t0 + 22 + i * 0.01,
                     "Failed" if i in (10, 500, 1500) else "Completed") for i in range(2000)]
    aggregates = [add("aggregate", i, (validates[2 * i], validates[2 * i + 1]), t0 + 43 + i * 0.01,
                      "Completed") for i in range(998)]
    add("report", 0, tuple(aggregates), t0 + 55, "Completed")
    assert len(transforms) + len(validates) + len(aggregates) + 2 == LARGE_RUN_TASKS
    store.apply(events + finished + [FlowRunState(run, "Failed", t0 + 60, error="3 tasks failed")])
    return run


class DashboardServer:
    """`dagrun server` as a child process on 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, database: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DAGRUN_SERVER_TOKEN", None)
        self.process = subprocess.Popen(
            [*DAGRUN, "server", "--host", "127.0.0.1",
             "--port", "0", "--database", f"sqlite:///{database}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until the server is listening
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.process.kill()
            pytest.fail(f"dagrun server did not start: {line!r} {self.process.stderr.read()}")
        self.url = match.group(0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def run_real_failing_flow(database: Path) -> str:
    """Run a real flow (in-process) that records into `database`; returns its flow run id."""
    from dagrun import flow, get_run_logger, task
    from dagrun.executors import InProcessExecutor

    @task
    def fetch() -> list[int]:
        get_run_logger().info("fetched 3 rows")
        return [1, 2, 3]

    @task(retries=1, retry_delay_seconds=0)
    def parse(rows: list[int]) -> list[int]:
        raise ValueError("bad row 7")

    @task
    def store_rows(rows: list[int]) -> int:
        return len(rows)

    @flow(name="real_etl", executor=InProcessExecutor())
    def real_etl() -> int:
        return store_rows(parse(fetch()))

    previous = os.environ.get("DAGRUN_DATABASE_URL")
    os.environ["DAGRUN_DATABASE_URL"] = f"sqlite:///{database}"
    try:
        assert real_etl(return_state=True).is_failed()
    finally:
        if previous is None:
            del os.environ["DAGRUN_DATABASE_URL"]
        else:
            os.environ["DAGRUN_DATABASE_URL"] = previous
    with HistoryStore(database) as store:
        return store.list_flow_runs(flow_name="real_etl")[0]["id"]


@pytest.fixture(scope="module")
def database(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HistoryStore, History, str]]:
    path = tmp_path_factory.mktemp("dashboard") / "history.db"
    with HistoryStore(path) as store:
        history = record_history(store)
        large = record_large_run(store)
        yield store, history, large


@pytest.fixture(scope="module")
def real_run(database: tuple[HistoryStore, History, str]) -> str:
    return run_real_failing_flow(database[0].path)


@pytest.fixture(scope="module")
def server(database: tuple[HistoryStore, History, str]) -> Iterator[DashboardServer]:
    running = DashboardServer(database[0].path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module", autouse=True)
def playwright_sync() -> ModuleType:
    """Playwright and Chromium, the real parts these tests drive, checked before anything starts:
    missing, they skip the tests here and fail them under CI (`CI=true`)."""
    require_part("Chromium", CHROMIUM.exists(), f"apt-get install chromium (looked for {CHROMIUM})")
    return require_module("playwright.sync_api", "Playwright", "pip install -e '.[test]'")


@pytest.fixture(scope="module")
def browser(playwright_sync: ModuleType) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: DashboardServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Nothing but the dashboard on 127.0.0.1 may be fetched: no CDN, no fonts, nothing.
    page.route(re.compile(r"^(?!http://127\.0\.0\.1:\d+/).*"), lambda route: route.abort())
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"the page raised: {errors}"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = os.environ.get("DAGRUN_SCREENSHOT_DIR")
    path = Path(directory) if directory else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def node(page: Any, task_name: str) -> Any:
    return page.locator(f'g.node[data-task-name="{task_name}"]')


def test_failed_run_from_runs_page_to_the_error_line(page: Any, server: DashboardServer,
                                                     database: Any, screenshots: Path) -> None:
    _, history, _ = database
    page.goto(server.url)
    row = page.locator(f'tr[data-run-id="{history.failed}"]')
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("Failed")
    page.screenshot(path=str(screenshots / "runs.png"))

    row.locator("a").click()
    failed = node(page, "transform")
    expect(failed).to_have_attribute("data-state", "Failed")
    red = failed.locator("rect.box").evaluate("box => getComputedStyle(box).stroke")
    assert red == "rgb(220, 38, 38)"
    for other in ("extract", "lookup", "load"):
        box = node(page, other).locator("rect.box")
        assert box.evaluate("box => getComputedStyle(box).stroke") != red
    expect(node(page, "load")).to_have_attribute("data-state", "NotRun")
    expect(page.locator(".error-panel")).to_contain_text("ValueError: bad row 42")
    expect(page.locator(".cache-hit")).to_contain_text("3f9a1c0d2e")
    page.screenshot(path=str(screenshots / "run.png"), full_page=True)

    failed.click()
    expect(page).to_have_url(re.compile(f"#/task-runs/{history.transform}$"))
    attempts = page.locator("table.attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("ConnectionError: reset by peer")
    error_line = page.locator(".log-table tr.level-ERROR")
    expect(error_line).to_have_count(1)
    expect(error_line).to_contain_text("Task 'transform' failed: ValueError: bad row 42")
    page.screenshot(path=str(screenshots / "task_run.png"), full_page=True)

    page.locator("nav.crumbs a").nth(1).click()
    page.get_by_role("link", name="Logs").click()
    expect(page.locator(".log-table tr")).to_have_count(4)
    page.screenshot(path=str(screenshots / "logs.png"))
    page.locator('select[name="task"] option[value="transform"]').wait_for(state="attached")
    page.select_option('select[name="task"]', "transform")
    page.select_option('select[name="level"]', "ERROR")
    lines = page.locator(".log-table tr")
    expect(lines).to_have_count(1)
    expect(lines).to_contain_text("ValueError: bad row 42")


def test_a_real_flow_run_failed_task_highlighted_and_its_error_in_the_logs(
    page: Any, server: DashboardServer, real_run: str
) -> None:
    page.goto(server.url)
    row = page.locator(f'tr[data-run-id="{real_run}"]')
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("Failed")
    row.locator("a").click()
    failed = node(page, "parse")
    expect(failed).to_have_attribute("data-state", "Failed")
    assert failed.locator("rect.box").evaluate("box => getComputedStyle(box).stroke") == "rgb(220, 38, 38)"
    expect(node(page, "fetch")).to_have_attribute("data-state", "Completed")
    expect(node(page, "store_rows")).to_have_attribute("data-state", "NotRun")
    expect(page.locator(".error-panel")).to_contain_text("ValueError: bad row 7")
    failed.click()
    attempts = page.locator("table.attempts tbody tr")
    expect(attempts).to_have_count(2)  # the retried attempt and the last one
    error_line = page.locator(".log-table tr.level-ERROR")
    expect(error_line.first).to_contain_text("Task run 'parse-0' failed: ValueError: bad row 7")


def test_runs_page_filters_by_state_flow_and_id(page: Any, server: DashboardServer,
                                                database: Any) -> None:
    _, history, _ = database
    page.goto(server.url)
    rows = page.locator("table.runs-table tbody tr[data-run-id]")
    expect(page.locator(f'tr[data-run-id="{history.report}"]')).to_be_visible()
    page.select_option('select[name="state"]', "Failed")
    expect(page.locator(f'tr[data-run-id="{history.report}"]')).to_have_count(0)
    for state in rows.evaluate_all("rows => rows.map((row) => row.dataset.state)"):
        assert state == "Failed"
    page.select_option('select[name="state"]', "")
    page.locator('select[name="flow"] option[value="report"]').wait_for(state="attached")
    page.select_option('select[name="flow"]', "report")
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-run-id", history.report)
    assert "flow=report" in page.url  # the filter survives a reload
    page.select_option('select[name="flow"]', "")
    # Wait for the unfiltered table, or the one-row view above would pass the checks below.
    expect(page.locator(f'tr[data-run-id="{history.completed}"]')).to_be_visible()
    page.fill('input[name="q"]', history.completed[:8])
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-run-id", history.completed)


def test_flows_page_charts_each_flow(page: Any, server: DashboardServer, database: Any,
                                     screenshots: Path) -> None:
    store, _, _ = database
    page.goto(f"{server.url}#/flows")
    for flow in store.flow_stats():
        card = page.locator(f'section.flow-card[data-flow="{flow["flow_name"]}"]')
        expect(card).to_be_visible()
        rate = "—" if flow["success_rate"] is None else f'{round(flow["success_rate"] * 100)}%'
        expect(card.locator(".success-rate")).to_have_text(rate)
        expect(card.locator("circle.point")).to_have_count(min(flow["run_count"], 60))
    etl_failures = 'section.flow-card[data-flow="etl"] circle.point[data-state="Failed"]'
    expect(page.locator(etl_failures)).to_have_count(1)
    page.screenshot(path=str(screenshots / "flows.png"), full_page=True)


def test_a_5000_task_run_loads_fast_and_stays_interactive(page: Any, server: DashboardServer,
                                                          database: Any, screenshots: Path) -> None:
    _, _, large = database
    start = time.perf_counter()
    page.goto(f"{server.url}#/runs/{large}")
    page.locator("svg.graph-svg[data-rendered]").wait_for()
    page.locator('canvas.gantt-canvas[data-bars="5000"]').wait_for()
    load_seconds = time.perf_counter() - start
    print(f"\n5,000-task run detail page loaded in {load_seconds:.3f} s")
    assert load_seconds < LOAD_BUDGET_SECONDS

    # Aggregated: one node per task name, the failures visible on their group.
    expect(page.locator("g.node")).to_have_count(5)
    expect(node(page, "validate")).to_have_attribute("data-state", "Failed")
    expect(node(page, "validate")).to_contain_text("3 Failed")

    # Zoom and pan answer within a frame or two.
    zoom_ms = page.evaluate("""() => new Promise((done) => {
        const drawing = document.querySelector("svg.graph-svg");
        const box = drawing.getBoundingClientRect();
        const began = performance.now();
        drawing.dispatchEvent(new WheelEvent("wheel", { deltaY: -300, bubbles: true,
            cancelable: true, clientX: box.left + box.width / 2,
            clientY: box.top + box.height / 2 }));
        requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - began)));
    })""")
    print(f"zoom step: {zoom_ms:.1f} ms")
    assert zoom_ms < 250
    viewport = page.locator("g.viewport")
    before = viewport.get_attribute("transform")
    box = page.locator("svg.graph-svg").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + 80, steps=5)
    page.mouse.up()
    assert viewport.get_attribute("transform") != before

    # A group opens a panel listing its task runs, failed first; one click opens a task run.
    page.locator("button", has_text="Fit").click()
    node(page, "validate").click()
    panel = page.locator("aside.group-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("validate × 2000")
    page.screenshot(path=str(screenshots / "run_5000_tasks.png"))
    panel.locator(".member-list a").first.click()
    expect(page.locator(".page-header .badge")).to_have_text("Failed")
    expect(page.locator(".error-panel")).to_contain_text("ValueError: shard is empty")


def test_a_deployment_is_run_from_its_form_and_the_run_appears(page: Any, server: DashboardServer,
                                                               database: Any, tmp_path: Path,
                                                               screenshots: Path) -> None:
    from test_deployments import flows_module

    from dagrun.deployments import DeploymentStore, Service, make_deployment

    store, _, _ = database
    nightly = make_deployment(flows_module(tmp_path)["doubler"], name="nightly", cron="0 2 * * *",
                              timezone="Europe/Berlin", parameters={"x": 2})
    with DeploymentStore(store.path) as deployments:
        service = Service([nightly], deployments, poll_interval=0.1, log_dir=tmp_path / "logs")
        service.register()
        page.goto(f"{server.url}#/deployments")
        card = page.locator('section.deployment-card[data-deployment="nightly"]')
        expect(card.locator(".schedule")).to_have_text("cron '0 2 * * *' (Europe/Berlin)")
        expect(card.locator(".next-runs")).to_contain_text(", ")

        card.get_by_role("button", name="Pause").click()
        expect(card.locator(".paused-badge")).to_be_visible()
        assert deployments.get("nightly")["paused"] is True
        card.get_by_role("button", name="Resume").click()
        expect(card.locator(".paused-badge")).to_have_count(0)

        card.get_by_role("button", name="Run…").click()
        form = card.locator("form.run-form")
        expect(form.locator('input[name="x"]')).to_have_value("2")
        form.locator('input[name="x"]').fill("7")
        form.get_by_role("button", name="Queue run").click()
        queued = card.locator("tr[data-request-id]")
        expect(queued).to_contain_text("Queued")
        expect(queued).to_contain_text("x=7")

        service.tick()  # what `dagrun serve` does: claim the request, start `dagrun run`
        (claim,) = deployments.claims("nightly")
        deadline = time.monotonic() + 60
        while service.running:
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.1)
            service.tick()
        service.stop()

        row = card.locator(f'tr[data-run-id="{claim["id"]}"]')
        expect(row.locator(".badge")).to_have_text("Completed", timeout=UPDATE_TIMEOUT_MS)
        expect(row).to_contain_text("Manual (request")
        expect(card.locator("tr[data-request-id]")).to_have_count(0)
        expect(card.locator(".last-run")).to_contain_text(claim["id"][:8])
        page.screenshot(path=str(screenshots / "deployments.png"), full_page=True)
        row.locator("a").first.click()
        expect(page).to_have_url(re.compile(f"#/runs/{claim['id']}$"))
        expect(page.locator(".page-header .badge")).to_have_text("Completed")
    run = store.get_flow_run(claim["id"])
    assert run is not None
    assert (run["deployment"], run["parameters"]["x"]) == ("nightly", 7)


def test_with_a_token_the_dashboards_buttons_still_work(page: Any, database: Any, tmp_path: Path) -> None:
    """Token mode refuses a POST without X-Dagrun-Request even with the session cookie; the
    dashboard's own Cancel and Pause buttons send it, so they keep working."""
    from test_deployments import flows_module
    from test_server_api import TOKEN

    from dagrun.deployments import DeploymentStore, make_deployment

    store, _, _ = database
    running = new_id()
    store.apply([started(running, "etl", time.time(), day="2026-12-07")])
    weekly = make_deployment(flows_module(tmp_path)["doubler"], name="weekly", cron="0 3 * * 1")
    with DeploymentStore(store.path) as deployments:
        deployments.register([weekly], datetime.now(UTC))
        env = {**os.environ, "DAGRUN_SERVER_TOKEN": TOKEN}
        with running_server("--database", str(store.path), "--host", "0.0.0.0", env=env) as (_, port):
            base = f"http://127.0.0.1:{port}/"
            page.goto(f"{base}?token={TOKEN}")  # the login: a session cookie, the token dropped
            assert page.url == base
            page.goto(f"{base}#/runs/{running}")
            page.get_by_role("button", name="Cancel run").click()
            deadline = time.monotonic() + UPDATE_TIMEOUT_MS / 1000
            while not store.cancel_requested(running):  # the button's POST went through
                assert time.monotonic() < deadline, page.locator("main").inner_text()
                time.sleep(0.05)

            page.goto(f"{base}#/deployments")
            card = page.locator('section.deployment-card[data-deployment="weekly"]')
            card.get_by_role("button", name="Pause").click()
            expect(card.locator(".paused-badge")).to_be_visible()
            assert deployments.get("weekly")["paused"] is True


def test_task_run_traceback_shows_the_users_code_with_a_full_traceback_toggle(
    page: Any, server: DashboardServer, real_run: str
) -> None:
    page.goto(f"{server.url}#/runs/{real_run}")
    node(page, "parse").click()
    trace = page.locator(".error-panel pre.traceback")
    expect(trace).to_contain_text(f'File "{__file__}"')
    expect(trace).to_contain_text('raise ValueError("bad row 7")')
    runner = os.path.join("dagrun", "runner.py")
    expect(trace).not_to_contain_text(runner)
    toggle = page.get_by_role("button", name="Full traceback")
    toggle.click()
    expect(trace).to_contain_text(runner)
    expect(trace).to_contain_text('raise ValueError("bad row 7")')
    page.get_by_role("button", name="Your code only").click()
    expect(trace).not_to_contain_text(runner)
