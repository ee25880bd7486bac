"""Prefect's task runners (`@flow(task_runner=...)`) and the thread executor they map onto:
tasks run where the runner says, concurrently, and clusters dagrun starts are stopped."""

from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import child_processes, wait_until_gone
from console_script import dagrun as dagrun_cli
from dagrun import flow, task
from dagrun.errors import ConfigError
from dagrun.executors import DaskExecutor, InProcessExecutor, ThreadExecutor
from dagrun.task_runners import DaskTaskRunner, ThreadPoolTaskRunner


def test_thread_pool_task_runner_runs_tasks_concurrently_in_the_driver():
    barrier = threading.Barrier(2, timeout=30)  # passes only if both tasks run at once

    @task
    def meet(name):
        barrier.wait()
        return name, os.getpid(), threading.current_thread().name

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def pipeline():
        return [meet("a"), meet("b")]

    results = pipeline()
    assert [name for name, _, _ in results] == ["a", "b"]
    assert all(pid == os.getpid() and thread.startswith("dagrun-task") for _, pid, thread in results)


def test_dask_task_runner_with_an_address_runs_on_that_cluster(local_cluster):
    @task
    def where():
        return os.getpid()

    @flow(task_runner=DaskTaskRunner(address=local_cluster.scheduler_address))
    def pipeline():
        return where()

    assert pipeline() in child_processes()  # a worker process of the test's LocalCluster


def test_dask_task_runner_maps_onto_dask_executor():
    runner = DaskTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs={"n_workers": 1}, adapt_kwargs={"maximum": 3}
    )
    executor = runner.to_executor()
    assert isinstance(executor, DaskExecutor)
    assert (executor.cluster, executor.cluster_kwargs, executor.adapt) == (
        "distributed.LocalCluster", {"n_workers": 1}, {"maximum": 3},
    )
    assert isinstance(ThreadPoolTaskRunner(3).to_executor(), ThreadExecutor)


def test_task_runner_and_executor_together_is_one_line():
    with pytest.raises(ConfigError, match="give either executor= or task_runner=, not both"):
        @flow(executor=InProcessExecutor(), task_runner=ThreadPoolTaskRunner())
        def pipeline():
            return 1

    with pytest.raises(ConfigError, match="DaskTaskRunner: option 'client_kwargs' is not supported"):
        DaskTaskRunner(client_kwargs={"set_as_default": True})


def test_dask_task_runner_with_a_cluster_class_starts_and_stops_that_cluster():
    before = child_processes()

    @task
    def where():
        return os.getpid()

    @flow(task_runner=DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": 1, "threads_per_worker": 1, "dashboard_address": None},
        adapt_kwargs={"minimum": 1, "maximum": 1},
    ))
    def pipeline():
        return where()

    assert pipeline() != os.getpid()  # ran in the cluster's worker process
    assert wait_until_gone(child_processes() - before) == set()


def test_a_prefect_task_runner_dagrun_lacks_names_what_to_use():
    with pytest.raises(ImportError, match="dagrun.task_runners has no ProcessPoolTaskRunner: use DaskTaskRunner()"):
        from dagrun.task_runners import ProcessPoolTaskRunner  # noqa: F401


def test_thread_executor_holds_tag_concurrency_limits():
    assert dagrun_cli("concurrency", "set", "serial", "1").returncode == 0
    windows: list[tuple[float, float]] = []
    running = threading.Barrier(3, timeout=30)  # the unlimited runs do overlap

    @task(tags=["serial"])
    def limited(index):
        start = time.monotonic()
        time.sleep(0.2)
        windows.append((start, time.monotonic()))
        return index

    @task
    def unlimited(index):
        running.wait()
        return index

    @flow(executor=ThreadExecutor(max_workers=6))
    def pipeline():
        return limited.map(range(3)), unlimited.map(range(3))

    assert [list(part) for part in pipeline()] == [[0, 1, 2], [0, 1, 2]]
    windows.sort()
    assert all(end <= next_start for (_, end), (next_start, _) in zip(windows, windows[1:]))


# ---------------------------------------------------------------- DAGRUN_EXECUTOR
def test_dagrun_executor_switches_code_that_names_no_executor(monkeypatch, local_cluster):
    @task
    def where():
        return os.getpid(), threading.current_thread().name

    @flow(task_runner=DaskTaskRunner(address=local_cluster.scheduler_address))
    def pipeline():
        return where()

    monkeypatch.setenv("DAGRUN_EXECUTOR", "threads")
    pid, thread = pipeline()
    assert pid == os.getpid() and thread.startswith("dagrun-task")  # the environment wins over the code
    monkeypatch.setenv("DAGRUN_EXECUTOR", "In-Process")
    assert pipeline() == (os.getpid(), threading.current_thread().name)


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"DAGRUN_EXECUTOR": "processes"}, "DAGRUN_EXECUTOR=processes is not an executor: use one of threads, in-process, dask"),
        ({"DAGRUN_EXECUTOR": "threads", "DAGRUN_CLUSTER": "local"}, "DAGRUN_EXECUTOR=threads and DAGRUN_CLUSTER=local are both set"),
    ],
)
def test_dagrun_executor_bad_values_fail_before_the_run_in_one_line(monkeypatch, environment, message):
    @flow
    def pipeline():
        return 1

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        pipeline()
