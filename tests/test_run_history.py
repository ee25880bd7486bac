"""Every run is recorded in the run history (a real SQLite file under DAGRUN_HOME) and can be
read back with the CLI, also after crashes, cancels and concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psutil
import pytest

from conftest import wait_until_gone
from console_script import DAGRUN
from dagrun import flow, get_run_logger, task
from dagrun.history import HistoryStore
from dagrun.notify import SlackNotifier, WebhookNotifier


def history() -> HistoryStore:
    return HistoryStore.from_env()


def dagrun_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DAGRUN, *args], capture_output=True, text=True, timeout=timeout
    )


def poll(check, timeout: float = 30.0, interval: float = 0.1):
    """Wait for a condition in another process (the database is the only channel we share)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


def test_states_timings_edges_and_logs_of_a_multi_task_run(dask_executor):
    @task
    def extract(day: str):
        get_run_logger().info("extracting %s", day)
        time.sleep(0.1)
        return [1, 2, None]

    @task
    def transform(rows):
        get_run_logger().info("transforming %d rows", len(rows))
        return [r for r in rows if r is not None]

    @task
    def load(rows):
        get_run_logger().warning("loaded %d", len(rows))
        return len(rows)

    @flow(name="history_etl", executor=dask_executor)
    def etl(day: str):
        return load(transform(extract(day)))

    assert etl("2026-11-25") == 2
    with history() as store:
        [run] = store.list_flow_runs(flow_name="history_etl")
        detail = store.get_flow_run(run["id"])
        logs = store.get_logs(run["id"])
        state_histories = [
            [s["state"] for s in store.get_task_run(t["id"])["state_history"]] for t in detail["task_runs"]
        ]
    assert run["state"] == "Completed" and run["parameters"] == {"day": "2026-11-25"}
    # Each state once, in order: `Running` is written when a task's start reaches the history
    # before its end (live states; short tasks' start and end often arrive in one batch), and
    # the final state is written once although both the worker and the engine report it.
    assert all(states in (["Pending", "Completed"], ["Pending", "Running", "Completed"]) for states in state_histories), state_histories
    assert len(state_histories) == 3
    assert run["start_time"] <= run["end_time"]
    tasks = {t["task_run_name"]: t for t in detail["task_runs"]}
    assert set(tasks) == {"extract-0", "transform-0", "load-0"}
    assert all(t["state"] == "Completed" and t["attempts"] == 1 for t in tasks.values())
    assert all((t["worker"] or "").startswith("tcp://127.0.0.1:") for t in tasks.values()), tasks
    assert tasks["transform-0"]["upstream"] == [tasks["extract-0"]["id"]]
    assert tasks["load-0"]["upstream"] == [tasks["transform-0"]["id"]]
    assert tasks["extract-0"]["end_time"] - tasks["extract-0"]["start_time"] >= 0.1
    assert tasks["transform-0"]["start_time"] >= tasks["extract-0"]["end_time"]
    messages = [line["message"] for line in logs]
    ordered = ["extracting 2026-11-25", "transforming 3 rows", "loaded 2"]
    assert [m for m in messages if m in ordered] == ordered
    assert [line["task_run_name"] for line in logs if line["message"] in ordered] == ["extract-0", "transform-0", "load-0"]
    assert messages[-1] == "Finished in state Completed"


def test_a_shared_cluster_keeps_nothing_of_recorded_runs_on_its_scheduler(local_cluster, dask_executor):
    """Where and when each task ran comes from the workers' own events: the scheduler gets no
    plugin, and a raw client's tasks next to recorded runs change nothing."""
    import distributed

    @task
    def double(x):
        return 2 * x

    @flow(name="on_a_shared_cluster", executor=dask_executor)
    def doubles(n: int):
        return double.map(range(n))

    plugins = set(local_cluster.scheduler.plugins)
    assert doubles(3) == [0, 2, 4]
    with distributed.Client(local_cluster.scheduler_address, set_as_default=False) as client:
        assert client.gather(client.map(double.fn, range(5), pure=False)) == [0, 2, 4, 6, 8]
        assert doubles(4) == [0, 2, 4, 6]
    assert set(local_cluster.scheduler.plugins) == plugins
    with history() as store:
        runs = store.list_flow_runs(flow_name="on_a_shared_cluster")
        pairs = [(run, t) for run in runs for t in store.get_flow_run(run["id"])["task_runs"]]
    assert len(pairs) == 7
    for run, t in pairs:
        assert t["worker"].startswith("tcp://127.0.0.1:"), t
        assert run["start_time"] <= t["start_time"] <= t["end_time"] <= run["end_time"], (run, t)


def test_a_failed_run_keeps_its_attempts_errors_and_traceback(executor):
    @task(retries=2, retry_delay_seconds=0)
    def flaky():
        raise ConnectionError("database unreachable")

    @task
    def after(value):
        return value

    @flow(name="history_failure", executor=executor)
    def failing():
        after(flaky())

    state = failing(return_state=True)
    assert state.is_failed()
    with history() as store:
        [run] = store.list_flow_runs(flow_name="history_failure")
        detail = store.get_flow_run(run["id"])
        tasks = {t["task_run_name"]: t for t in detail["task_runs"]}
        attempts = store.get_task_run(tasks["flaky-0"]["id"])["attempt_history"]
    assert run["state"] == "Failed" and "database unreachable" in detail["error"]
    assert "Traceback" in detail["traceback"]
    assert tasks["flaky-0"]["state"] == "Failed" and tasks["flaky-0"]["attempts"] == 3
    assert "ConnectionError: database unreachable" in tasks["flaky-0"]["error"]
    assert "in flaky" in tasks["flaky-0"]["traceback"]  # the frame of the user function
    assert [a["attempt"] for a in attempts][:2] == [1, 2]
    assert all("database unreachable" in a["error"] for a in attempts[:2])
    assert tasks["after-0"]["state"] == "NotRun"


DRIVER_SCRIPT = textwrap.dedent(
    '''
    import sys, time
    from pathlib import Path
    from dagrun import flow, task

    @task
    def stuck(marker):
        Path(marker).write_text("running")
        time.sleep(120)

    @task
    def quick():
        return 1

    @flow(name="{name}")
    def long_flow(marker: str):
        quick()
        return stuck(marker)

    if __name__ == "__main__":
        long_flow(sys.argv[1])
    '''
)


def start_driver(tmp_path: Path, name: str, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / f"{name}.py"
    script.write_text(DRIVER_SCRIPT.replace("{name}", name))
    marker = tmp_path / f"{name}.started"
    process = subprocess.Popen(
        [sys.executable, str(script), str(marker)], env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    poll(lambda: marker.exists() or process.poll() is not None, timeout=60)
    assert process.poll() is None, process.communicate()
    return process, marker


def group_pids(process: subprocess.Popen) -> list[int]:
    return [process.pid] + [c.pid for c in psutil.Process(process.pid).children(recursive=True)]


def test_a_driver_killed_with_sigkill_shows_up_as_crashed(tmp_path):
    process, _ = start_driver(tmp_path, "killed_driver", {"DAGRUN_LEASE_SECONDS": "2"})
    try:
        def recorded_running():
            with history() as store:
                runs = store.list_flow_runs(flow_name="killed_driver")
                detail = runs and store.get_flow_run(runs[0]["id"])
                names = {t["task_run_name"] for t in detail["task_runs"]} if detail else set()
                return runs[0] if "stuck-0" in names and runs[0]["state"] == "Running" else None

        run = poll(recorded_running)  # what the writer thread has written (it batches every 0.2 s)
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, no goodbye
        process.wait(timeout=30)

        def crashed():
            with history() as store:
                return store.list_flow_runs(flow_name="killed_driver")[0]["state"] == "Crashed"

        poll(crashed, timeout=30, interval=0.5)
        with history() as store:
            detail = store.get_flow_run(run["id"])
        states = {t["task_run_name"]: t["state"] for t in detail["task_runs"]}
        assert states["stuck-0"] == "Crashed"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_runs_cancel_is_carried_out_by_the_running_driver(tmp_path):
    process, _ = start_driver(tmp_path, "to_cancel")
    try:
        family = group_pids(process)
        with history() as store:
            [run] = store.list_flow_runs(flow_name="to_cancel")
        result = dagrun_cli("runs", "cancel", run["id"][:10])
        assert result.returncode == 0, result.stderr
        process.wait(timeout=30)
        assert process.returncode != 0
        with history() as store:
            detail = store.get_flow_run(run["id"])
        assert detail["state"] == "Cancelled"
        assert {t["task_run_name"]: t["state"] for t in detail["task_runs"]}["stuck-0"] == "Cancelled"
        assert wait_until_gone(family, timeout=20) == set()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


CONCURRENT_SCRIPT = textwrap.dedent(
    '''
    import sys
    from dagrun import flow, task
    from dagrun.executors import InProcessExecutor

    @task
    def step(i):
        return i * 2

    @flow(name="concurrent", executor=InProcessExecutor())
    def many(worker: int):
        return sum(f.result() for f in step.map(range(200)))

    if __name__ == "__main__":
        for _ in range(5):
            many(int(sys.argv[1]))
    '''
)


def test_four_processes_record_everything_without_lock_errors(tmp_path):
    script = tmp_path / "parallel_writers.py"
    script.write_text(CONCURRENT_SCRIPT)
    processes = [
        subprocess.Popen([sys.executable, str(script), str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    assert not any("locked" in err for _, err in outputs)
    with history() as store:
        runs = store.list_flow_runs(flow_name="concurrent", limit=100)
        assert len(runs) == 20 and {r["state"] for r in runs} == {"Completed"}
        counts = {len(store.get_flow_run(r["id"])["task_runs"]) for r in runs}
    assert counts == {200}


def test_runs_cli_json_fields(executor):
    @task
    def one():
        return 1

    @flow(name="cli_fields", executor=executor)
    def small():
        return one()

    small()
    listed = json.loads(dagrun_cli("runs", "ls", "--json").stdout)
    assert {"id", "flow_name", "state", "start_time", "end_time", "parameters"} <= set(listed[0])
    shown = dagrun_cli("runs", "show", listed[0]["id"], "--json")
    detail = json.loads(shown.stdout)
    assert {"id", "task_name", "state", "start_time", "end_time", "attempts", "cache_key", "upstream"} <= set(
        detail["task_runs"][0]
    )
    table = dagrun_cli("runs", "show", listed[0]["id"][:8]).stdout
    assert "one-0" in table and "Completed" in table
    logs = dagrun_cli("runs", "logs", listed[0]["id"]).stdout
    assert "Finished in state Completed" in logs
    flows = dagrun_cli("flows", "ls").stdout
    assert "cli_fields" in flows and "100%" in flows
    missing = dagrun_cli("runs", "show", "ffffffff")
    assert missing.returncode == 2 and "No flow run with id 'ffffffff'" in missing.stderr


def test_an_unwritable_history_warns_once_and_the_flow_still_runs(executor, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DAGRUN_DATABASE_URL", f"sqlite:///{tmp_path}/missing/dir/x.db?mode=ro")

    @task
    def square(x: int) -> int:
        return x * x

    @flow
    def inner(n: int) -> int:
        return sum(future.result() for future in square.map(range(n)))

    @flow(executor=executor)
    def fine():
        return sum(future.result() for future in square.map(range(10))) + inner(3)

    with caplog.at_level("WARNING", logger="dagrun.history"):
        assert fine() == 285 + 5
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("dagrun.history")]
    assert len(warnings) == 1, warnings  # one for the run: not one per task, event or subflow
    assert warnings[0].startswith("Run history unavailable, this run is not recorded: ")


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        return None


@pytest.fixture
def http_receiver():
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Receiver.received
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_and_slack_notifiers_post_the_expected_json(executor, http_receiver):
    url, received = http_receiver

    @task
    def explode():
        raise ValueError("bad row 7\nsecond line")

    @flow(name="notified", executor=executor,
          notify=[WebhookNotifier(f"{url}/hook"), SlackNotifier(f"{url}/slack")])
    def notified():
        explode()

    state = notified(return_state=True)
    assert state.is_failed()
    by_path = dict(received)
    hook = by_path["/hook"]
    assert hook["flow_name"] == "notified" and hook["state"] == "Failed"
    assert hook["failed_task"] == "explode-0"
    assert hook["error"] == "ValueError: bad row 7"
    assert hook["flow_run_id"] and hook["duration_seconds"] >= 0
    slack = by_path["/slack"]["text"]
    assert "Flow `notified`" in slack and "Failed" in slack and "`explode-0`" in slack and "bad row 7" in slack


def test_a_notifier_endpoint_that_is_down_never_fails_the_flow(executor, caplog):
    @flow(executor=executor, notify="http://127.0.0.1:9/unreachable")
    def failing():
        raise RuntimeError("the flow's own error")

    with caplog.at_level("WARNING", logger="dagrun.notify"):
        with pytest.raises(RuntimeError, match="the flow's own error"):
            failing()
    assert any("Could not notify" in r.getMessage() for r in caplog.records)


def test_state_hooks_receive_the_task_or_flow_the_record_and_the_state(executor):
    seen = []

    def remember(owner, record, state):
        seen.append((owner.name, record.name.split("-")[0], state.name))

    @task(on_completion=[remember])
    def good():
        return 1

    @task(on_failure=[remember])
    def bad():
        raise KeyError("x")

    @flow(name="hooked", executor=executor, on_failure=[remember])
    def hooked():
        good()
        bad()

    hooked(return_state=True)
    assert ("good", "good", "Completed") in seen
    assert ("bad", "bad", "Failed") in seen
    assert ("hooked", "hooked", "Failed") in seen


def test_on_running_hooks_run_where_the_task_runs_before_each_attempt(executor, tmp_path, run_logs):
    """Prefect's `on_running` hooks: a task's run in the task's process before each attempt's
    body (a retry enters Running again), a flow's in the driver before its body; a hook that
    raises is logged on the task run and the run goes on."""
    events = tmp_path / "events.log"

    def note(line):
        with open(events, "a") as file:
            file.write(line + "\n")

    def started(task, task_run, state):
        note(f"hook {task.name} {task_run.name} {task_run.task_name} {state.name} {os.getpid()}")

    def broken(task, task_run, state):
        raise RuntimeError("hook broke")

    @task(retries=1, on_running=[broken, started])
    def flaky():
        note(f"body {os.getpid()}")
        if [line.split()[0] for line in events.read_text().splitlines()].count("body") == 1:
            raise ValueError("first attempt fails")
        return "ok"

    @flow(executor=executor)
    def runs():
        note("flow body")
        return flaky()

    @runs.on_running
    def flow_started(flow, flow_run, state):
        note(f"flow hook {flow.name} {flow_run.flow_name} {state.name} {os.getpid()}")

    assert runs() == "ok"
    lines = events.read_text().splitlines()
    assert lines[:2] == [f"flow hook runs runs Running {os.getpid()}", "flow body"], lines
    body_pid = lines[3].split()[1]
    assert lines[2:] == [f"hook flaky flaky-0 flaky Running {body_pid}", f"body {body_pid}"] * 2, lines
    failures = [r.getMessage() for r in run_logs if "hook broke" in r.getMessage()]
    assert len(failures) == 2 and "Hook 'broken' of 'flaky' failed: RuntimeError: hook broke" in failures[0]
