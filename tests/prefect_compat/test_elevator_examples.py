"""Prefect's elevator examples (ten tasks sleeping 10..1 s), run as scripts with `prefect` ->
`dagrun` in the imports; the scripts of one executor run at once (they mostly sleep).

Sources (PrefectHQ/prefect):
- docs/v3/how-to-guides/workflows/run-work-concurrently.mdx: "Calling tasks directly",
  "Using `.submit`", "Using a different task runner" (`prefect_dask.task_runners` is
  `dagrun.task_runners` in dagrun), "Using `.map`"
- docs/v3/concepts/task-runners.mdx: "use threads to run tasks concurrently"
  (`ThreadPoolTaskRunner(max_workers=3)`). Its `ProcessPoolTaskRunner` twin is out of scope:
  dagrun's process pool is Dask (`DaskTaskRunner()`); importing it fails with one line saying so.

The async elevator (`asyncio.gather`) is in test_async_examples.py.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from prefect_examples import run_scripts, script_executor  # noqa: F401

CALLED_DIRECTLY = '''\
import time

from dagrun import task

@task
def stop_at_floor(floor: int):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor)
    print(f"elevator stops on floor {floor}")

stop_at_floor(0.1) # blocks for 0.1 seconds
stop_at_floor(0.2) # blocks for 0.2 seconds
stop_at_floor(0.3) # blocks for 0.3 seconds
'''

SUBMITTED = '''\
import time

from dagrun import flow, task
from dagrun.futures import wait

@task
def stop_at_floor(floor: int):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor)
    print(f"elevator stops on floor {floor}")

@flow
def elevator():
    floors = []
    for floor in range(10, 0, -1):
        floors.append(stop_at_floor.submit(floor))
    wait(floors)
'''

ON_DASK_TASK_RUNNER = '''\
import time

from dagrun import flow, task
from dagrun.futures import wait
from dagrun.task_runners import DaskTaskRunner

@task
def stop_at_floor(floor: int):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor)
    print(f"elevator stops on floor {floor}")

@flow(task_runner=DaskTaskRunner())
def elevator():
    floors = []
    for floor in range(10, 0, -1):
        floors.append(stop_at_floor.submit(floor))
    wait(floors)
'''

MAPPED = '''\
import time

from dagrun import flow, task
from dagrun.futures import wait

@task
def stop_at_floor(floor: int):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor)
    print(f"elevator stops on floor {floor}")

@flow
def elevator():
    floors = list(range(10, 0, -1))
    floors = stop_at_floor.map(floors)
    wait(floors)
'''

ON_THREE_THREADS = '''\
from dagrun import flow, task
from dagrun.futures import wait
from dagrun.task_runners import ThreadPoolTaskRunner
import time

@task
def stop_at_floor(floor):
    print(f"elevator moving to floor {floor}")
    time.sleep(floor)
    print(f"elevator stops on floor {floor}")

@flow(task_runner=ThreadPoolTaskRunner(max_workers=3))
def elevator():
    floors = []

    for floor in range(10, 0, -1):
        floors.append(stop_at_floor.submit(floor))

    wait(floors) # wait for the sequence of futures to complete
'''

# The flow examples define `elevator` and leave running it to the reader: run it as a script would.
RUN = '\n\nif __name__ == "__main__":\n    elevator()\n'

PROCESS_POOL_IMPORT = "from dagrun.task_runners import ProcessPoolTaskRunner\n"


def _seconds(stderr: str) -> float:
    clocks = [re.match(r"(\d\d:\d\d:\d\d\.\d+)", line) for line in stderr.splitlines()]
    begin = next(c for c, line in zip(clocks, stderr.splitlines()) if c and "Beginning flow run" in line)
    end = next(c for c, line in zip(clocks, stderr.splitlines()) if c and "Finished in state" in line)
    return (datetime.strptime(end.group(1), "%H:%M:%S.%f") - datetime.strptime(begin.group(1), "%H:%M:%S.%f")).total_seconds()


def _events(stdout: str) -> list[str]:
    """The elevator's lines in order. Threads print concurrently, and `print` writes its text
    and its newline separately, so two lines may share one (with Prefect's threads too)."""
    return re.findall(r"elevator (?:moving to|stops on) floor \d+", stdout)


def _most_in_flight(stdout: str) -> int:
    in_flight = most = 0
    for event in _events(stdout):
        in_flight += 1 if "moving" in event else -1
        most = max(most, in_flight)
    return most


def _every_floor_visited(stdout: str) -> bool:
    floors = range(1, 11)
    expected = [f"elevator moving to floor {f}" for f in floors] + [f"elevator stops on floor {f}" for f in floors]
    return sorted(_events(stdout)) == sorted(expected)


def test_elevators_run_their_floors_concurrently(script_executor, tmp_path):
    scripts = {"submitted": SUBMITTED + RUN, "on_dask_task_runner": ON_DASK_TASK_RUNNER + RUN, "mapped": MAPPED + RUN}
    if script_executor == "default-cluster":  # under DAGRUN_EXECUTOR=threads its 3 threads would not be its own
        scripts["on_three_threads"] = ON_THREE_THREADS + RUN
    results = run_scripts(tmp_path, scripts)
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr)
        assert _every_floor_visited(result.stdout), (name, result.stdout)
        assert "Finished in state Completed" in result.stderr, (name, result.stderr)
    for name in ("submitted", "on_dask_task_runner", "mapped"):
        # Concurrently: far below the 55 s the ten floors take one after another.
        took = _seconds(results[name].stderr)
        assert 10 <= took < 25, (name, took)
        assert _most_in_flight(results[name].stdout) >= 4, (name, results[name].stdout)
    if "on_three_threads" in results:
        assert _most_in_flight(results["on_three_threads"].stdout) == 3, results["on_three_threads"].stdout


def test_tasks_called_directly_outside_a_flow_block_one_after_another(tmp_path):
    result = run_scripts(tmp_path, {"called_directly": CALLED_DIRECTLY})["called_directly"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        line for floor in (0.1, 0.2, 0.3) for line in (f"elevator moving to floor {floor}", f"elevator stops on floor {floor}")
    ]


def test_process_pool_task_runner_is_dask_in_dagrun():
    with pytest.raises(ImportError, match="dagrun.task_runners has no ProcessPoolTaskRunner: use DaskTaskRunner()"):
        exec(PROCESS_POOL_IMPORT, {})
