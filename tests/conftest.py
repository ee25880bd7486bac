"""Shared fixtures: the executors every behaviour test runs on, and process bookkeeping.

`executor` runs a test three times: on the in-process executor, the thread executor and a
real LocalCluster with worker processes (shared by the session, so tests do not pay a cluster start each). Under
`CI=true` a skipped test fails (the hooks from `real_parts`): CI must run every real part.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import dask
import distributed
import psutil
import pytest

from dagrun.executors import DaskExecutor, InProcessExecutor, ThreadExecutor
from dagrun.logs import console_logger
from real_parts import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401 (hooks)


@pytest.fixture(autouse=True)
def dagrun_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own DAGRUN_HOME, so no state leaks between tests."""
    home = tmp_path / "dagrun-home"
    monkeypatch.setenv("DAGRUN_HOME", str(home))
    monkeypatch.delenv("DAGRUN_CLUSTER", raising=False)
    monkeypatch.delenv("DAGRUN_EXECUTOR", raising=False)
    return home


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[distributed.LocalCluster]:
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=4, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["in_process", "threads", "dask"])
def executor(request: pytest.FixtureRequest):
    """The same behaviour suite on every executor."""
    if request.param == "in_process":
        return InProcessExecutor()
    if request.param == "threads":
        return ThreadExecutor(max_workers=4)
    return DaskExecutor(address=request.getfixturevalue("local_cluster").scheduler_address)


@pytest.fixture
def dask_executor(local_cluster: distributed.LocalCluster) -> DaskExecutor:
    return DaskExecutor(address=local_cluster.scheduler_address)


class CallLog:
    """Counts task executions across processes by appending lines to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def record(self, text: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(f"{text}\n")

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines()

    def count(self, text: str) -> int:
        return self.lines().count(text)


@pytest.fixture
def calls(tmp_path: Path) -> CallLog:
    return CallLog(tmp_path / "calls.log")


def child_processes() -> set[int]:
    """Our descendant processes, except multiprocessing's resource tracker: a singleton that
    the stdlib starts once per process and that exits with it (it is not a worker)."""
    pids = set()
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def wait_until_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    """The pids among `pids` still alive after waiting up to `timeout` for them to exit.

    A zombie counts as gone: it has exited, and only its parent has not collected its status
    (init, for a dead driver's orphans, and some sandboxes' init never does)."""
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return {process.pid for process in alive if not _exited(process)}


def _exited(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def run_logs() -> Iterator[list[logging.LogRecord]]:
    """Log records of flow and task runs as they reach the driver's console logger."""
    logger = console_logger()
    handler = _ListHandler()
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
