"""Tasks that take their worker down with them, on real LocalClusters with worker processes.

Every test here starts its own cluster: a worker that dies (or should not) must not touch the
session's shared cluster. Worker deaths are counted from the scheduler's `remove-worker`
events and from the pids the task's attempts ran in.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import distributed
import pytest
from dask.utils import format_bytes

from dagrun import flow, task
from dagrun.errors import CrashedError
from dagrun.executors import DaskExecutor
from dagrun.history import HistoryStore


def start_cluster(**kwargs) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0", **kwargs
    )


@pytest.fixture
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two single-threaded worker processes, each with a nanny that restarts it."""
    cluster = start_cluster(n_workers=2, threads_per_worker=1)
    try:
        yield cluster
    finally:
        cluster.close()


def worker_deaths(cluster: distributed.LocalCluster) -> int:
    """How many workers the scheduler lost without being told they would leave."""
    events = cluster.scheduler.get_events("all")
    return sum(1 for _, event in events if event.get("action") == "remove-worker" and not event.get("expected"))


def worker_pids(cluster: distributed.LocalCluster) -> set[int]:
    with distributed.Client(cluster, set_as_default=False) as client:
        return set(client.run(os.getpid).values())


def task_runs(flow_name: str) -> dict[str, dict]:
    with HistoryStore.from_env() as store:
        [run] = store.list_flow_runs(flow_name=flow_name)
        return {t["task_run_name"]: store.get_task_run(t["id"]) for t in store.get_flow_run(run["id"])["task_runs"]}


def test_a_task_that_exits_its_worker_takes_down_one_worker_per_attempt(cluster, tmp_path):
    pids = tmp_path / "pids"

    @task(retries=2)
    def exit_hard(path):
        with open(path, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        os._exit(1)

    @flow(executor=DaskExecutor(address=cluster.scheduler_address))
    def exits():
        return exit_hard(str(pids))

    state = exits(return_state=True)

    assert state.name == "Crashed"
    assert isinstance(state.exception, CrashedError)
    attempts = pids.read_text().split()
    assert len(attempts) == 3 and len(set(attempts)) == 3  # each attempt in a fresh worker process
    assert worker_deaths(cluster) == 3  # not 3 submissions x Dask's 4 allowed failures
    message = str(state.exception)
    assert "exit_hard-0" in message and "worker" in message and "died" in message, message
    assert "attempt 3 of 3" in message, message
    [run] = task_runs("exits").values()
    assert run["state"] == "Crashed" and run["attempts"] == 3
    assert [a["attempt"] for a in run["attempt_history"]] == [1, 2, 3]
    assert all("died" in a["error"] for a in run["attempt_history"]), run["attempt_history"]


def test_a_task_without_retries_that_exits_its_worker_takes_down_exactly_one(cluster, tmp_path):
    pids = tmp_path / "pids"

    @task
    def exit_hard(path):
        with open(path, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        os._exit(1)

    @flow(executor=DaskExecutor(address=cluster.scheduler_address))
    def exits_once():
        return exit_hard(str(pids))

    state = exits_once(return_state=True)

    assert state.name == "Crashed"
    assert "attempt 1 of 1" in str(state.exception), state.exception
    assert len(pids.read_text().split()) == 1
    assert worker_deaths(cluster) == 1
    [run] = task_runs("exits_once").values()
    assert run["state"] == "Crashed" and run["attempts"] == 1


def test_map_items_waiting_on_a_worker_that_a_task_kills_complete_without_retries(tmp_path):
    """With worker-saturation inf the whole map is assigned to the two workers at once: the
    items queued behind the one that kills its worker fail with it on the scheduler, and must
    be rerun without using an attempt they never started."""
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = start_cluster(n_workers=2, threads_per_worker=1)
    try:

        @task
        def item(x):
            if x == 7:
                os._exit(1)
            time.sleep(0.02)
            return x

        @flow(executor=DaskExecutor(address=cluster.scheduler_address))
        def mapped():
            return item.map(range(60))

        state = mapped(return_state=True)

        assert worker_deaths(cluster) == 1
        runs = task_runs("mapped")
        assert runs.pop("item-7")["state"] == "Crashed"
        assert len(runs) == 59
        assert {name: run["state"] for name, run in runs.items() if run["state"] != "Completed"} == {}
        assert all(run["attempts"] == 1 for run in runs.values()), runs
        assert state.name in ("Crashed", "Failed")
    finally:
        cluster.close()


def test_a_worker_killed_under_a_long_task_crashes_it_and_its_queued_tasks_complete(tmp_path):
    """An external SIGKILL: the long task it was running is Crashed (it had no retries); the
    map items queued behind it on that worker run elsewhere without using an attempt."""
    pid_file = tmp_path / "long.pid"
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = start_cluster(n_workers=2, threads_per_worker=1)
    try:

        @task
        def long(path):
            Path(path).write_text(str(os.getpid()))
            time.sleep(60)

        @task
        def item(x):
            time.sleep(0.05)
            return x

        @flow(executor=DaskExecutor(address=cluster.scheduler_address))
        def killed_under_long():
            running = long(str(pid_file))
            items = item.map(range(40))
            deadline = time.monotonic() + 30
            while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
                time.sleep(0.01)  # poll for the file the task writes: the cross-process event
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            return running, items

        state = killed_under_long(return_state=True)

        assert state.name == "Crashed"
        assert "long-0" in str(state.exception) and "attempt 1 of 1" in str(state.exception), state.exception
        assert worker_deaths(cluster) == 1
        runs = task_runs("killed_under_long")
        long_run = runs.pop("long-0")
        assert long_run["state"] == "Crashed" and long_run["attempts"] == 1
        assert len(runs) == 40
        assert {(run["state"], run["attempts"]) for run in runs.values()} == {("Completed", 1)}, runs
    finally:
        cluster.close()


def test_a_rerun_after_a_worker_death_is_an_attempt_in_the_history(cluster, tmp_path):
    marker = tmp_path / "died-once"

    @task(retries=1)
    def fragile():
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # the first attempt takes its worker down
        return "done"

    @flow(executor=DaskExecutor(address=cluster.scheduler_address))
    def survives():
        return fragile()

    assert survives() == "done"
    assert worker_deaths(cluster) == 1
    [run] = task_runs("survives").values()
    assert run["state"] == "Completed" and run["attempts"] == 2 and run["error"] is None
    first, last = run["attempt_history"]
    assert first["attempt"] == 1 and "KilledWorker" in first["error"] and "died" in first["error"]
    assert last["attempt"] == 2 and last["error"] is None
    assert [s["state"] for s in run["state_history"]] == ["Pending", "Retrying", "Completed"]


def test_system_exit_and_keyboard_interrupt_fail_the_task_and_no_worker_dies(tmp_path):
    cluster = start_cluster(n_workers=1, threads_per_worker=2)
    try:
        before = worker_pids(cluster)

        @task
        def leave(code):
            sys.exit(code)

        @task
        def interrupt():
            raise KeyboardInterrupt

        @task
        def after(x):
            return x + 1

        states = {}

        @flow(executor=DaskExecutor(address=cluster.scheduler_address))
        def exits():
            for name, future in (("exit", leave.submit(3)), ("interrupt", interrupt.submit())):
                future.wait()
                states[name] = future.state
            states["after"] = after(1).result()  # the worker is still there to run it

        exits(return_state=True)
        assert states["after"] == 2
        assert states["exit"].name == "Failed" and "SystemExit: 3" in states["exit"].message
        assert states["interrupt"].name == "Failed" and "KeyboardInterrupt" in states["interrupt"].message
        assert worker_pids(cluster) == before
        assert worker_deaths(cluster) == 0
        runs = task_runs("exits")
        assert runs["leave-0"]["state"] == "Failed" and "SystemExit: 3" in runs["leave-0"]["error"]
        assert runs["leave-0"]["attempts"] == 1
    finally:
        cluster.close()


def test_a_worker_killed_for_its_memory_limit_says_so_in_the_task_error(tmp_path):
    limit = 300 * 2**20
    cluster = start_cluster(n_workers=1, threads_per_worker=1, memory_limit=limit)
    try:

        @task
        def hog():
            blocks = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # grow until the nanny steps in
                blocks.append(b"\x01" * (20 * 2**20))
                time.sleep(0.02)
            return len(blocks)

        @flow(executor=DaskExecutor(address=cluster.scheduler_address))
        def hungry():
            return hog()

        state = hungry(return_state=True)

        assert state.name == "Crashed"
        message = str(state.exception)
        assert "memory" in message and format_bytes(limit) in message, message
        # No retries: the one attempt cost one worker, then Crashed.
        assert "attempt 1 of 1" in message and worker_deaths(cluster) == 1, message
        [run] = task_runs("hungry").values()
        assert run["state"] == "Crashed" and run["attempts"] == 1
        assert "memory" in run["error"] and format_bytes(limit) in run["error"], run["error"]
    finally:
        cluster.close()

