"""Remake docs/screenshots/*.png from real runs, in a fresh history of their own.

Runs the four flows in examples/, and the flows in docs/screenshot_flows.py (a pipeline that
fails after a retry, a report photographed while a task runs, a 5,000-task map, a deployment
run by `dagrun serve`), each as `dagrun run` on one local Dask cluster; then opens the real
`dagrun server` over that history in headless Chromium and photographs its pages.

Needs Debian's chromium (/usr/bin/chromium, or DAGRUN_TEST_CHROMIUM) and Playwright
(`pip install -e '.[test]'`; it never downloads a browser). About two minutes:

    python docs/make_screenshots.py
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOWS = "docs/screenshot_flows.py"  # relative to the project copy, where every command runs
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = Path(os.environ.get("DAGRUN_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
WAIT_MS = 60_000
DAGRUN = [str(Path(sys.executable).parent / "dagrun")]


class Runs:
    """`dagrun ...` commands against one history and one cluster (`DAGRUN_CLUSTER`)."""

    def __init__(self, home: Path, scheduler: str) -> None:
        # The flows run from a copy in the scratch folder, so the file paths the pages show
        # (tracebacks, deployment cards) name no folder of the machine that made them.
        self.project = home.parent / "project"
        shutil.copytree(ROOT / "examples", self.project / "examples")
        (self.project / "docs").mkdir()
        shutil.copy(ROOT / FLOWS, self.project / FLOWS)
        configs = home / "cluster_configs"
        configs.mkdir(parents=True)
        (configs / "screenshots.yaml").write_text(f"address: {scheduler}\n")
        self.work = home / "work"
        self.work.mkdir()
        self.env = {**os.environ, "DAGRUN_HOME": str(home), "DAGRUN_CLUSTER": "screenshots",
                    "SCREENSHOT_WORK": str(self.work)}
        self.env.pop("DAGRUN_DATABASE_URL", None)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*DAGRUN, *args], cwd=self.project, env=self.env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def run(self, target: str, *params: str, expect_failure: bool = False) -> None:
        """`dagrun run TARGET --param ...` to its end; it must end as expected."""
        started = time.monotonic()
        process = self.start("run", target, *[arg for p in params for arg in ("--param", p)])
        _, stderr = process.communicate(timeout=600)
        if (process.returncode != 0) != expect_failure:
            raise SystemExit(f"dagrun run {target} ended with {process.returncode}:\n{stderr}")
        print(f"  {target} {' '.join(params)}: {time.monotonic() - started:.1f} s")


def record_runs(runs: Runs) -> None:
    """Every run but the live one, oldest first (the runs page lists the newest first)."""
    for day in ("2026-11-22", "2026-11-23", "2026-11-24"):
        runs.run("examples/etl.py:simple_etl_flow", f"day={day}")
    for n in ("10", "50", "200"):
        runs.run("examples/fan_out.py:fan_out", f"n={n}")
    for start in ("6", "27"):
        runs.run("examples/dynamic.py:collatz", f"start={start}")
    runs.run("examples/retries.py:flaky_fetch")
    runs.run(f"{FLOWS}:nightly_etl", "day=2026-11-24")  # computes and caches the lookup
    runs.run(f"{FLOWS}:nightly_etl", "day=2026-11-25", expect_failure=True)  # the cache hit
    runs.run(f"{FLOWS}:big_map", expect_failure=True)


def run_deployment(runs: Runs, store: Any) -> None:
    """`dagrun serve` the nightly deployment and run it once by hand, as the Run… button does."""
    serve = runs.start("serve", FLOWS, "--poll-interval", "0.2")
    try:
        wait_until(lambda: _deployment_registered(runs), "dagrun serve registers 'nightly'", serve)
        queued = subprocess.run([*DAGRUN, "deployments", "run", "nightly", "--param", "day=2026-11-24"],
                                env=runs.env, capture_output=True, text=True)
        if queued.returncode != 0:
            raise SystemExit(f"dagrun deployments run failed: {queued.stderr}")
        wait_until(lambda: any(run["deployment"] == "nightly" and run["end_time"]
                               for run in store.list_flow_runs(flow_name="nightly_etl")),
                   "the deployment's run ends", serve)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=120)
    print("  deployment 'nightly' run by dagrun serve")


def _deployment_registered(runs: Runs) -> bool:
    listed = subprocess.run([*DAGRUN, "deployments", "ls"], env=runs.env, capture_output=True, text=True)
    return "nightly" in listed.stdout


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        if process.poll() is not None:
            raise SystemExit(f"waiting for {what}: the process ended:\n{process.communicate()[1]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"waiting for {what}: gave up after 300 s")
        time.sleep(0.2)


@contextmanager
def dashboard(runs: Runs, database: Path) -> Iterator[str]:
    server = subprocess.Popen([*DAGRUN, "server", "--port", "0", "--database", f"sqlite:///{database}"],
                              env=runs.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())
    if not match:
        server.kill()
        raise SystemExit(f"dagrun server did not start: {server.communicate()[1]}")
    try:
        yield match.group(0)
    finally:
        server.terminate()
        server.wait(10)


def photograph(page: Any, url: str, store: Any, runs: Runs, expect: Any) -> None:
    def run_id(flow_name: str, state: str) -> str:
        return next(run["id"] for run in store.list_flow_runs(flow_name=flow_name) if run["state"] == state)

    def node(name: str) -> Any:
        return page.locator(f'g.node[data-task-name="{name}"]')

    # A run photographed while its `render` task runs (held at a gate), then let go.
    live = runs.start("run", f"{FLOWS}:weekly_report")
    page.goto(url)
    row = page.locator('tr[data-run-id][data-state="Running"]')
    expect(row).to_have_count(1, timeout=WAIT_MS)
    row.locator("a").first.click()
    expect(node("render")).to_have_attribute("data-state", "Running", timeout=WAIT_MS)
    expect(page.locator("canvas.gantt-canvas")).to_have_attribute("data-bars", "8", timeout=WAIT_MS)
    page.screenshot(path=str(OUT / "run_live.png"), full_page=True)
    (runs.work / "render-gate").write_text("open")
    expect(page.locator(".page-header .badge")).to_have_text("Completed", timeout=WAIT_MS)
    if live.wait(120) != 0:
        raise SystemExit(f"the live run failed: {live.communicate()[1]}")

    page.goto(url)
    expect(page.locator("tr[data-run-id]").first).to_be_visible()
    page.screenshot(path=str(OUT / "runs.png"))

    failed = run_id("nightly_etl", "Failed")
    page.goto(f"{url}#/runs/{failed}")
    expect(node("transform")).to_have_attribute("data-state", "Failed")
    expect(page.locator(".cache-hit")).to_be_visible()
    page.screenshot(path=str(OUT / "run.png"), full_page=True)
    node("transform").click()
    expect(page.locator("table.attempts tbody tr")).to_have_count(2)
    expect(page.locator(".log-table tr.level-ERROR").first).to_be_visible()
    page.screenshot(path=str(OUT / "task_run.png"), full_page=True)
    page.goto(f"{url}#/runs/{failed}/logs")
    expect(page.locator(".log-scroll")).to_have_attribute("data-stream", "ended", timeout=WAIT_MS)
    page.screenshot(path=str(OUT / "logs.png"))

    page.goto(f"{url}#/flows")
    expect(page.locator("section.flow-card")).to_have_count(7)
    page.screenshot(path=str(OUT / "flows.png"), full_page=True)

    page.goto(f"{url}#/runs/{run_id('big_map', 'Failed')}")
    page.locator("svg.graph-svg[data-rendered]").wait_for(timeout=WAIT_MS)
    page.locator("button", has_text="Fit").click()
    node("check").click()
    expect(page.locator("aside.group-panel")).to_be_visible()
    page.locator("div.graph-area").evaluate(  # the graph's panel at the top, below the menu bar
        "area => { area.parentElement.scrollIntoView(); window.scrollBy(0, -64); }")
    page.screenshot(path=str(OUT / "run_5000_tasks.png"))

    page.goto(f"{url}#/deployments")
    card = page.locator('section.deployment-card[data-deployment="nightly"]')
    expect(card.locator("tr[data-run-id] .badge").first).to_have_text("Completed")
    page.screenshot(path=str(OUT / "deployments.png"), full_page=True)


def main() -> int:
    if not CHROMIUM.exists():
        print(f"Error: Chromium is missing: apt-get install chromium (looked for {CHROMIUM})", file=sys.stderr)
        return 2
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        print("Error: Playwright is missing: pip install -e '.[test]'", file=sys.stderr)
        return 2
    import distributed

    from dagrun.history import HistoryStore

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dagrun-screenshots-") as scratch, \
            distributed.LocalCluster(n_workers=2, threads_per_worker=2, host="127.0.0.1",
                                     dashboard_address="127.0.0.1:0",
                                     silence_logs=logging.CRITICAL) as cluster:
        home = Path(scratch) / "home"
        runs = Runs(home, cluster.scheduler_address)
        print(f"Running flows on {cluster.scheduler_address}, history in {home}")
        record_runs(runs)
        database = home / "dagrun.db"
        with HistoryStore(database) as store:
            run_deployment(runs, store)
            OUT.mkdir(parents=True, exist_ok=True)
            with dashboard(runs, database) as url, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    photograph(page, url, store, runs, expect)
                finally:
                    browser.close()
    print(f"Wrote {len(list(OUT.glob('*.png')))} screenshots to {OUT} in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
