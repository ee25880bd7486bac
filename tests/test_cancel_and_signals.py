"""Stopping a run from outside its driver: `dagrun runs cancel`, SIGTERM, and a driver that died.

Each test runs the real `dagrun` console script in its own session with a real local cluster,
waits (by a file the task writes) until a long task is running on a worker, then stops the run
the way a user or a process manager would. A cancel must not depend on the driver's SIGINT
handling: a shell starts `dagrun run ... &` with SIGINT ignored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import wait_until_gone

DAGRUN = Path(sys.executable).parent / "dagrun"  # the console script itself: its pid is the driver's
CANCEL_WITHIN = 5.0  # seconds from the request to a Cancelled run whose processes are all gone

FLOWS = textwrap.dedent(
    '''
    import time
    from pathlib import Path
    from dagrun import flow, task

    @task
    def quick() -> int:
        return 1

    @task
    def sleeper(marker: str) -> str:
        Path(marker).write_text("running")
        time.sleep(120)
        return "done"

    @flow(name="blocked_in_result")
    def blocked_in_result(marker: str):
        quick()
        return sleeper(marker).result()  # the flow body waits here

    @flow(name="waiting_at_the_end")
    def waiting_at_the_end(marker: str):
        quick()
        sleeper(marker)  # the body returns at once; the run waits for the task at its end

    @flow(name="inner")
    def inner(marker: str):
        return sleeper(marker).result()

    @flow(name="outer_swallowing")
    def outer_swallowing(marker: str):
        try:
            return inner(marker)
        except Exception:  # the flow's own error handling must not swallow a cancel
            return "swallowed"
    '''
)


def dagrun(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(DAGRUN), *args], capture_output=True, text=True, timeout=timeout)


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


@contextmanager
def running_driver(tmp_path: Path, flow: str, *, ignore_sigint: bool = False) -> Iterator[dict[str, Any]]:
    """`dagrun run flows.py:FLOW` in its own session, yielded once its long task is running on a
    worker: the process, its run id and every process it started. Whatever is left of them is
    killed afterwards, also when the test failed."""
    assert DAGRUN.exists(), f"the dagrun console script is not installed next to {sys.executable}"
    (tmp_path / "flows.py").write_text(FLOWS)
    marker = tmp_path / f"{flow}.running"

    def ignore_ctrl_c() -> None:  # what a shell does for `dagrun run ... &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = subprocess.Popen(
        [str(DAGRUN), "run", f"flows.py:{flow}", "--param", f"marker={marker}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=ignore_ctrl_c if ignore_sigint else None,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    family: set[int] = {process.pid}
    try:
        poll(lambda: marker.exists() or process.poll() is not None, 120, "the long task to start")
        assert process.poll() is None, process.communicate()
        family |= {child.pid for child in psutil.Process(process.pid).children(recursive=True)}

        def recorded() -> list[dict[str, Any]]:  # the driver's history writer batches every 0.2 s
            return [r for r in json.loads(dagrun("runs", "ls", "--json").stdout) if r["flow_name"] == flow]

        [run] = poll(recorded, 30, "the run to be recorded")
        assert run["state"] == "Running"
        yield {"process": process, "run_id": run["id"], "family": family}
    finally:
        for pid in family:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        if process.poll() is None:
            process.wait(timeout=30)


def cancel_requested_at(run_id: str, home: Path) -> float:
    """When `dagrun runs cancel` recorded the request (the history's clock)."""
    from dagrun.history import HistoryStore

    with HistoryStore(home / "dagrun.db") as store, store.read_transaction() as connection:
        row = connection.execute("SELECT cancel_requested FROM flow_runs WHERE id = ?", (run_id,)).fetchone()
    assert row["cancel_requested"] is not None
    return float(row["cancel_requested"])


def show(run_id: str) -> dict[str, Any]:
    result = dagrun("runs", "show", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_exit(process: subprocess.Popen, timeout: float) -> tuple[float, str]:
    """(when the driver exited, its stderr); on a hang, its threads' stacks in the failure."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"the driver was still running {timeout} s later; its threads:\n{stderr[-20000:]}")
    return time.time(), stderr


def assert_cancelled_quickly(driver: dict[str, Any], home: Path) -> None:
    process, run_id = driver["process"], driver["run_id"]
    result = dagrun("runs", "cancel", run_id)
    assert result.returncode == 0, result.stderr
    assert f"Cancel requested for flow run {run_id}" in result.stdout
    requested = cancel_requested_at(run_id, home)
    exited, stderr = wait_for_exit(process, timeout=60)
    assert wait_until_gone(driver["family"], timeout=0.5) == set()
    assert exited - requested < CANCEL_WITHIN, f"the driver exited {exited - requested:.1f} s after the request"
    assert process.returncode == 130, stderr
    assert "Flow run cancelled" in stderr and "Traceback" not in stderr
    run = show(run_id)
    assert run["state"] == "Cancelled"
    assert run["end_time"] - requested < CANCEL_WITHIN
    states = {task["task_run_name"]: task["state"] for task in run["task_runs"]}
    assert states == {"quick-0": "Completed", "sleeper-0": "Cancelled"}


def ignores_sigint(pid: int) -> bool:
    """From the kernel's own record of the process's ignored signals."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    ignored = int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def test_runs_cancel_stops_a_driver_that_ignores_sigint(tmp_path, dagrun_home):
    with running_driver(tmp_path, "blocked_in_result", ignore_sigint=True) as driver:
        assert ignores_sigint(driver["process"].pid)
        assert_cancelled_quickly(driver, dagrun_home)


def test_runs_cancel_stops_a_driver_waiting_at_the_end_of_its_run(tmp_path, dagrun_home):
    with running_driver(tmp_path, "waiting_at_the_end") as driver:
        assert_cancelled_quickly(driver, dagrun_home)


def test_runs_cancel_reaches_a_subflow_through_a_body_that_catches_exceptions(tmp_path):
    with running_driver(tmp_path, "outer_swallowing") as driver:
        process, run_id = driver["process"], driver["run_id"]
        assert dagrun("runs", "cancel", run_id).returncode == 0
        _, stderr = wait_for_exit(process, timeout=60)
        assert wait_until_gone(driver["family"], timeout=5) == set()
        assert process.returncode == 130, stderr
        outer = show(run_id)
        assert outer["state"] == "Cancelled"
        [subflow] = outer["subflow_runs"]
        inner = show(subflow["id"])
        assert (inner["flow_name"], inner["state"]) == ("inner", "Cancelled")
        assert {task["task_run_name"]: task["state"] for task in inner["task_runs"]} == {"sleeper-0": "Cancelled"}


def test_sigterm_cancels_the_run_and_exits_143(tmp_path):
    with running_driver(tmp_path, "blocked_in_result") as driver:
        process, run_id = driver["process"], driver["run_id"]
        sent = time.time()
        process.send_signal(signal.SIGTERM)  # what `kill`, systemd and container runtimes send
        exited, stderr = wait_for_exit(process, timeout=60)
        assert wait_until_gone(driver["family"], timeout=0.5) == set()
        assert exited - sent < CANCEL_WITHIN, f"the driver exited {exited - sent:.1f} s after SIGTERM"
        assert process.returncode == 143, stderr
        assert "Finished in state Cancelled: Cancelled by SIGTERM" in stderr and "Traceback" not in stderr
        run = show(run_id)
        assert run["state"] == "Cancelled" and run["message"] == "Cancelled by SIGTERM"
        states = {task["task_run_name"]: task["state"] for task in run["task_runs"]}
        assert states == {"quick-0": "Completed", "sleeper-0": "Cancelled"}


def test_a_driver_killed_on_this_host_is_crashed_without_waiting_for_its_lease(tmp_path):
    with running_driver(tmp_path, "blocked_in_result") as driver:
        process, run_id = driver["process"], driver["run_id"]
        process.kill()  # the driver alone, no goodbye; not reaped yet either (a zombie)
        poll(lambda: psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE, 10, "the driver to die")
        listed = {run["id"]: run for run in json.loads(dagrun("runs", "ls", "--json").stdout)}
        assert listed[run_id]["state"] == "Crashed"  # the lease (30 s) is far from over
        run = show(run_id)
        assert f"pid {process.pid}" in run["message"] and "is gone" in run["message"]
        states = {task["task_run_name"]: task["state"] for task in run["task_runs"]}
        assert states["sleeper-0"] == "Crashed"
        assert set(states.values()) <= {"Completed", "Crashed"}  # none left Running or Pending


def test_a_recorded_driver_is_crashed_on_read_only_when_its_own_machine_sees_it_gone(tmp_path):
    from dagrun.history import FlowRunStarted, HistoryStore
    from dagrun.history.drivers import this_process

    space, my_start = this_process()
    assert space is not None and my_start is not None, "this test needs Linux's /proc"
    ended = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    ended_start = psutil.Process(ended.pid).create_time()
    ended.communicate(b"")  # it exits, and is reaped: its pid is free

    def run(run_id: str, pid: int, started: float, *, space: str = space, deployment: str | None = None):
        return FlowRunStarted(
            flow_run_id=run_id, flow_name="etl", flow_run_name=f"etl-{run_id}", parameters={},
            start_time=time.time(), parent_flow_run_id=None, parent_task_run_id=None, executor="local",
            address=None, host=socket.gethostname(), pid=pid, deployment=deployment, lease_seconds=3600.0,
            process_space=space, process_start=started,
        )

    with HistoryStore(tmp_path / "dagrun.db") as store:
        store.apply([
            run("alive", os.getpid(), my_start),
            run("ended", ended.pid, ended_start),
            run("pid-reused", os.getpid(), my_start - 60),  # the pid now belongs to a later process
            run("other-container", ended.pid, ended_start, space="another-boot pid:[4026532000]"),
            run("served", ended.pid, ended_start, deployment="nightly"),  # its service settles it
        ])
        states = {r["id"]: r["state"] for r in store.list_flow_runs()}
        assert states == {
            "alive": "Running", "ended": "Crashed", "pid-reused": "Crashed",
            "other-container": "Running", "served": "Running",
        }
        message = store.get_flow_run("ended")["message"]
        assert message == (
            f"Crashed: the driver (pid {ended.pid} on {socket.gethostname()}) is gone; "
            "it ended without recording a final state"
        )
