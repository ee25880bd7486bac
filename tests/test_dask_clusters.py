"""Flows on real Dask clusters: the default LocalCluster's lifecycle, remote `dask scheduler` /
`dask worker` processes on 127.0.0.1, and infrastructure failures (killed workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import child_processes, wait_until_gone
from dagrun import flow, task
from dagrun.errors import ConfigError, CrashedError
from dagrun.executors import DaskExecutor
from dagrun.history import HistoryStore


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_file(path: Path, timeout: float = 30.0) -> str:
    """Poll for a file another process writes (the cross-process event we have)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise TimeoutError(f"{path} was not written within {timeout} s")


def listening_addresses(pids: set[int]) -> set[str]:
    addresses = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


@task
def square(x):
    return x * x


@task
def total(values):
    return sum(values)


def test_default_local_cluster_binds_loopback_and_is_shut_down_after_the_run():
    before = child_processes()
    seen = {}

    @flow
    def pipeline(n: int):
        seen["children"] = child_processes() - before
        seen["listening"] = listening_addresses(seen["children"] | {os.getpid()})
        return total(square.map(range(n)))

    assert pipeline(10) == 285
    assert len(seen["children"]) >= 1  # worker processes existed during the run
    assert seen["listening"] == {"127.0.0.1"}  # scheduler, dashboard and workers: loopback only
    assert wait_until_gone(seen["children"]) == set()


def test_default_local_cluster_is_shut_down_when_the_flow_fails():
    before = child_processes()
    seen = {}

    @task
    def broken():
        raise RuntimeError("task failed")

    @flow
    def pipeline():
        seen["children"] = child_processes() - before
        broken()

    with pytest.raises(RuntimeError, match="task failed"):
        pipeline()
    assert seen["children"] and wait_until_gone(seen["children"]) == set()


def test_worker_killed_mid_task_the_flow_still_completes(dask_executor, tmp_path):
    pid_file = tmp_path / "first-attempt.pid"

    @task(retries=1)  # a worker death costs an attempt: the task needs one to spare
    def slow_square(x, pid_path):
        path = Path(pid_path)
        if not path.exists():
            path.write_text(str(os.getpid()))  # first attempt: tell the test who to kill
            time.sleep(30)
        return x * x

    @flow(executor=dask_executor)
    def pipeline():
        future = slow_square(7, str(pid_file))
        others = square.map(range(5))
        for other in others:  # finished before the kill: a task running when its worker dies loses an attempt
            other.wait()
        os.kill(int(wait_for_file(pid_file)), signal.SIGKILL)
        return future, total(others)

    assert pipeline() == (49, 30)


def test_worker_killed_under_a_task_without_retries_crashes_it_and_the_rest_completes(dask_executor, tmp_path):
    pid_file = tmp_path / "attempt.pid"

    @task
    def slow_square(x, pid_path):
        Path(pid_path).write_text(str(os.getpid()))
        time.sleep(30)
        return x * x

    @flow(executor=dask_executor)
    def killed():
        future = slow_square(7, str(pid_file))
        others = square.map(range(5))
        values = [other.result() for other in others]  # done before the kill (some on the killed worker)
        os.kill(int(wait_for_file(pid_file)), signal.SIGKILL)
        summed = total(others)
        summed.wait()
        return future, values, summed

    state = killed(return_state=True)

    assert state.name == "Crashed"
    assert "slow_square-0" in str(state.exception) and "attempt 1 of 1" in str(state.exception), state.exception
    with HistoryStore.from_env() as store:
        [run] = store.list_flow_runs(flow_name="killed")
        runs = {t["task_run_name"]: store.get_task_run(t["id"]) for t in store.get_flow_run(run["id"])["task_runs"]}
    crashed = runs.pop("slow_square-0")
    assert crashed["state"] == "Crashed" and crashed["attempts"] == 1
    assert {name: run["state"] for name, run in runs.items()} == {
        **{f"square-{i}": "Completed" for i in range(5)}, "total-0": "Completed",
    }


def test_plain_tcp_to_another_host_is_refused_before_connecting():
    with pytest.raises(ConfigError, match=r"refusing plain tcp://.*Enable TLS.*insecure: true"):
        DaskExecutor(address="tcp://scheduler.example.com:8786")


@pytest.fixture(scope="module")
def remote_cluster() -> Iterator[str]:
    """A real `dask scheduler` and a `dask worker` (2 processes) on 127.0.0.1."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0", "--no-show"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2", "--nthreads", "2",
         "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0", "--no-dashboard"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import distributed

        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in (worker, scheduler):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (worker, scheduler):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_attach_to_a_remote_scheduler_by_address(remote_cluster):
    @flow(executor=DaskExecutor(address=remote_cluster))
    def pipeline():
        return total(square.map(range(4)))

    assert pipeline() == 14
    # Where and when each task ran reaches the history from the remote workers' task events.
    with HistoryStore.from_env() as store:
        [run] = store.list_flow_runs(flow_name="pipeline")
        task_runs = store.get_flow_run(run["id"])["task_runs"]
    assert len(task_runs) == 5
    assert all(t["worker"].startswith("tcp://127.0.0.1:") for t in task_runs), task_runs
    assert all(run["start_time"] <= t["start_time"] <= t["end_time"] <= run["end_time"] for t in task_runs)


def test_the_same_flow_through_a_yaml_cluster_config(remote_cluster, tmp_path, monkeypatch):
    configs = tmp_path / "cluster_configs"
    configs.mkdir()
    (configs / "lab.yaml").write_text(f"address: {remote_cluster}\nconnect_timeout: 20\n")
    monkeypatch.chdir(tmp_path)

    @flow(executor="lab")
    def by_name():
        return total(square.map(range(3)))

    assert by_name() == 5
    monkeypatch.setenv("DAGRUN_CLUSTER", str(configs / "lab.yaml"))

    @flow
    def by_env():
        return square(9)

    assert by_env() == 81


def test_a_task_that_kills_every_worker_ends_crashed(remote_cluster):
    @task
    def poison():
        os.kill(os.getpid(), signal.SIGKILL)

    @flow(executor=DaskExecutor(address=remote_cluster))
    def pipeline():
        return poison(), square(3)

    state = pipeline(return_state=True)
    assert state.name == "Crashed"
    assert isinstance(state.exception, CrashedError)
    assert "poison-0" in str(state.exception) and "KilledWorker" in str(state.exception)


def start_scheduler(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0", "--no-show"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def start_worker(address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "2",
         "--host", "127.0.0.1", "--no-dashboard"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def restartable_cluster() -> Iterator[dict]:
    """A scheduler the test may kill and restart on the same port, and one worker process."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = {"scheduler": start_scheduler(port)}
    processes["worker"] = start_worker(address)
    try:
        import distributed

        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
        yield {"address": address, "port": port, "processes": processes}
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_scheduler_killed_and_restarted_mid_flow_the_flow_reconnects_and_completes(restartable_cluster, tmp_path):
    cluster = restartable_cluster
    marker = tmp_path / "second-step-started"

    @task
    def step(x, marker_path=None):
        if marker_path is not None:
            Path(marker_path).write_text("started")
        time.sleep(1.0)
        return x + 1

    @flow(executor=DaskExecutor(address=cluster["address"], connect_timeout=60))
    def chain():
        first = step(1)
        second = step(first, str(marker))
        third = step(second)
        wait_for_file(marker, timeout=60)  # the scheduler dies while `second` runs
        scheduler = cluster["processes"]["scheduler"]
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait()
        cluster["processes"]["scheduler"] = start_scheduler(cluster["port"])
        # Dask workers shut down when their scheduler goes away; the deployment brings them
        # back with it (as a Kubernetes or Slurm cluster would).
        worker = cluster["processes"]["worker"]
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        cluster["processes"]["worker"] = start_worker(cluster["address"])
        return third

    assert chain() == 4


def test_a_scheduler_that_does_not_come_back_ends_the_flow_crashed(restartable_cluster, tmp_path):
    cluster = restartable_cluster
    marker = tmp_path / "started"

    @task
    def slow(marker_path):
        Path(marker_path).write_text("started")
        time.sleep(30)

    @flow(executor=DaskExecutor(address=cluster["address"], connect_timeout=3))
    def doomed():
        future = slow(str(marker))
        wait_for_file(marker, timeout=60)
        scheduler = cluster["processes"]["scheduler"]
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait()
        return future

    start = time.monotonic()
    state = doomed(return_state=True)
    assert state.name == "Crashed"
    assert "could not reconnect within 3 s" in str(state.exception)
    assert time.monotonic() - start < 30
