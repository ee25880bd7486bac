"""A flow's `timeout_seconds` ends its run at the timeout, as in Prefect: the body is
interrupted wherever it is (a `time.sleep` too), the line after it never runs, the run's
running and pending tasks are cancelled, and the run is recorded `Failed` with a
`FlowTimeoutError` whose message says so. Durations are read from the run history (the run's
recorded start and end), with generous bounds: the body would sleep 5 s, the timeout is 1 s."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import wait_until_gone
from console_script import DAGRUN, dagrun as dagrun_cli
from dagrun import flow, task
from dagrun.errors import FlowTimeoutError
from dagrun.executors import DaskExecutor, ThreadExecutor

ENDED_WELL_BEFORE = 4.0  # seconds: a run whose timeout is 1 s, whose body would take 5 s or more


def recorded_runs() -> dict[str, dict]:
    """Every flow run in the history by flow name (`runs ls` / `runs show --json`)."""
    listed = json.loads(dagrun_cli("runs", "ls", "--json").stdout)
    shown = [json.loads(dagrun_cli("runs", "show", run["id"], "--json").stdout) for run in listed]
    return {run["flow_name"]: run for run in shown}


def assert_timed_out(run: dict) -> None:
    """`run` (from the history) ended Failed by a 1 s timeout, well before its body's 5 s."""
    assert run["state"] == "Failed", run
    duration = run["end_time"] - run["start_time"]
    assert 0.9 <= duration < ENDED_WELL_BEFORE, f"the run lasted {duration:.1f} s; its timeout is 1 s"


@pytest.fixture(params=["threads", "dask"])
def task_executor(request: pytest.FixtureRequest):
    """Executors where a task runs beside the flow body (in-process runs each task at once)."""
    if request.param == "threads":
        return ThreadExecutor(max_workers=4)
    return DaskExecutor(address=request.getfixturevalue("local_cluster").scheduler_address)


# ---------------------------------------------------------------- the body is interrupted
def test_prefects_timeout_example_ends_the_run_at_the_timeout(executor, run_logs):
    # Prefect's docs (how-to-guides/workflows/write-and-run), imports changed, plus the executor.
    @flow(timeout_seconds=1, log_prints=True, executor=executor)
    def show_timeouts():
        print("I will execute")
        time.sleep(5)
        print("I will not execute")

    with pytest.raises(FlowTimeoutError) as raised:
        show_timeouts()
    assert isinstance(raised.value, TimeoutError)
    assert "exceeded its timeout_seconds: timeout of 1 second(s)" in str(raised.value)
    printed = [record.getMessage() for record in run_logs]
    assert "I will execute" in printed and "I will not execute" not in printed
    run = recorded_runs()["show_timeouts"]
    assert_timed_out(run)
    assert "exceeded its timeout_seconds: timeout of 1 second(s)" in run["message"]


def test_the_body_cannot_swallow_the_timeout_with_except_exception(executor, calls):
    @flow(timeout_seconds=1, executor=executor)
    def stubborn():
        try:
            time.sleep(5)
        except Exception:  # noqa: BLE001 - what user code often does
            calls.record("swallowed")
        calls.record("after the sleep")

    state = stubborn(return_state=True)
    assert state.is_failed() and isinstance(state.exception, FlowTimeoutError)
    assert calls.lines() == []
    assert_timed_out(recorded_runs()["stubborn"])


def test_a_timeout_met_in_a_wait_and_swallowed_still_ends_the_body(task_executor, tmp_path, calls):
    """The deadline passes while the body waits for a task (dagrun's wait raises the timeout
    there); a body that swallows that error is interrupted in its own code right after."""
    release = tmp_path / "release"

    @task
    def slow() -> int:
        for _ in range(1200):  # a minute at most
            if release.exists():
                break
            time.sleep(0.05)
        return 1

    @flow(timeout_seconds=1, executor=task_executor)
    def waits_then_carries_on():
        try:
            slow().result()
        except Exception as error:  # noqa: BLE001 - what user code often does
            calls.record(type(error).__name__)
        time.sleep(5)
        calls.record("after the sleep")

    try:
        state = waits_then_carries_on(return_state=True)
    finally:
        release.touch()
    assert state.is_failed() and isinstance(state.exception, FlowTimeoutError)
    assert calls.lines() == ["FlowTimeoutError"]
    assert_timed_out(recorded_runs()["waits_then_carries_on"])


def test_an_async_flow_is_cancelled_at_its_timeout(executor, calls):
    @flow(timeout_seconds=1, executor=executor)
    async def waits():
        calls.record("before")
        await asyncio.sleep(5)
        calls.record("after the sleep")

    state = asyncio.run(waits(return_state=True))
    assert state.is_failed() and isinstance(state.exception, FlowTimeoutError)
    assert calls.lines() == ["before"]
    assert_timed_out(recorded_runs()["waits"])


def test_a_flow_run_from_another_thread_is_interrupted_too():
    """Off the main thread there is no SIGALRM: the body's thread gets the interrupt at its
    next Python instruction (a blocking call returns first)."""
    after = []

    @flow(timeout_seconds=1, executor=ThreadExecutor())
    def busy():
        end = time.monotonic() + 5
        while time.monotonic() < end:
            time.sleep(0.02)
        after.append("after the loop")

    states = []
    worker = threading.Thread(target=lambda: states.append(busy(return_state=True)))
    worker.start()
    worker.join(30)
    [state] = states
    assert state.is_failed() and isinstance(state.exception, FlowTimeoutError)
    assert after == []
    assert_timed_out(recorded_runs()["busy"])


# ---------------------------------------------------------------- subflows
def test_a_subflows_timeout_ends_the_subflow_and_the_parent_carries_on(executor):
    @flow(timeout_seconds=1)
    def child():
        time.sleep(5)
        return "never"

    @flow(executor=executor)
    def parent():
        state = child(return_state=True)
        return f"child ended {state.name}"

    assert parent() == "child ended Failed"
    runs = recorded_runs()
    assert runs["parent"]["state"] == "Completed"
    assert_timed_out(runs["child"])


def test_the_parents_timeout_ends_a_subflow_running_then(executor, calls):
    @flow
    def child():
        time.sleep(5)
        calls.record("child after the sleep")

    @flow(timeout_seconds=1, executor=executor)
    def parent():
        child()
        calls.record("parent after the child")

    with pytest.raises(FlowTimeoutError, match="Flow run 'parent-"):
        parent()
    assert calls.lines() == []
    runs = recorded_runs()
    assert_timed_out(runs["parent"])
    assert_timed_out(runs["child"])
    assert runs["child"]["message"].startswith("Flow run 'parent-")  # it names whose time was up


# ---------------------------------------------------------------- tasks
def test_tasks_running_at_the_timeout_are_cancelled(task_executor, tmp_path):
    release = tmp_path / "release"
    futures = []

    @task
    def holds_a_thread(release: Path, upstream: int = 0) -> int:
        for _ in range(1200):  # a minute at most
            if release.exists():
                break
            time.sleep(0.05)
        return upstream + 1

    @flow(executor=task_executor, timeout_seconds=1)
    def pipeline():
        running = holds_a_thread(release)
        futures.extend([running, holds_a_thread(release, running)])  # the second waits for the first
        time.sleep(5)  # interrupted: nor does the run wait for its tasks
        return futures[-1]

    try:
        state = pipeline(return_state=True)
    finally:
        release.touch()  # frees the thread the first task holds
    assert state.is_failed() and isinstance(state.exception, FlowTimeoutError)
    assert [future.state.name for future in futures] == ["Cancelled", "Cancelled"]
    run = recorded_runs()["pipeline"]
    assert_timed_out(run)
    assert [task_run["state"] for task_run in run["task_runs"]] == ["Cancelled", "Cancelled"]


# ---------------------------------------------------------------- the CLI
SCRIPT = textwrap.dedent(
    '''
    import time
    from dagrun import flow, task
    from dagrun.executors import DaskExecutor, ThreadExecutor

    @task
    def sleeps() -> int:
        time.sleep(30)
        return 1

    @flow(timeout_seconds=1, log_prints=True, executor=EXECUTOR)
    def show_timeouts():
        print("I will execute")
        sleeps()
        time.sleep(5)
        print("I will not execute")
    '''
)


@pytest.mark.parametrize("executor", ["DaskExecutor()", "ThreadExecutor()"])
def test_dagrun_run_of_a_timed_out_flow_exits_1_with_one_line_and_leaves_no_worker(tmp_path, dagrun_home, executor):
    """On the local cluster `dagrun run` starts, or in its threads: the task sleeping 30 s
    neither keeps the run (nor the process) from ending nor survives it (its worker process is
    stopped; a thread ends with the process)."""
    (tmp_path / "flows.py").write_text(SCRIPT.replace("EXECUTOR", executor))
    started = time.monotonic()
    result = subprocess.run(
        [*DAGRUN, "run", "flows.py:show_timeouts"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "I will execute" in output and "I will not execute" not in output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Flow run failed: FlowTimeoutError: Flow run 'show_timeouts-")
    assert last.endswith("exceeded its timeout_seconds: timeout of 1 second(s)")
    assert "Traceback" not in output and "CancelledError" not in output, output
    assert took < 25, f"dagrun run took {took:.0f} s: it waited for the 30 s task"
    run = recorded_runs()["show_timeouts"]
    assert_timed_out(run)
    assert [task_run["state"] for task_run in run["task_runs"]] == ["Cancelled"]
    assert wait_until_gone(_processes_of(dagrun_home), timeout=10) == set()


def _processes_of(home: Path) -> set[int]:
    """Processes (workers included) started with this test's DAGRUN_HOME in their environment."""
    found = set()
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get("DAGRUN_HOME") == str(home):
                found.add(process.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_a_subflow_timeout_error_the_parent_raises_is_an_ordinary_failure(executor):
    """The parent did not run out of time: its body raising the child's timeout fails it
    the usual way (waiting for its independent tasks), and names the child's run."""

    @flow(timeout_seconds=1)
    def child():
        time.sleep(5)

    @flow(executor=executor)
    def parent():
        child()

    state = parent(return_state=True)
    assert state.is_failed() and isinstance(state.exception, FlowTimeoutError)
    assert "Flow run 'child-" in state.message
    assert_timed_out(recorded_runs()["child"])

