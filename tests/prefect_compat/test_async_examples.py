"""Prefect 3's async examples, verbatim but for `prefect` -> `dagrun` in the imports, run as
scripts (`python FILE`) on the default local cluster and on threads, give Prefect's output.

Sources (PrefectHQ/prefect):
- docs/v3/how-to-guides/workflows/run-work-concurrently.mdx, "Using `asyncio`"
- docs/3.0rc/develop/write-tasks/index.mdx, "Async functions" (a task run outside a flow)
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from prefect_examples import script_executor  # noqa: F401

ELEVATOR = '''\
import asyncio

from dagrun import flow, task

@task
async def stop_at_floor(floor: int):
    print(f"elevator moving to floor {floor}")
    await asyncio.sleep(floor)
    print(f"elevator stops on floor {floor}")

@flow
async def elevator():
    floors = list(range(10, 0, -1))
    await asyncio.gather(*[stop_at_floor(floor) for floor in floors])


if __name__ == "__main__":
    asyncio.run(elevator())
'''

ASYNC_TASK = '''\
from dagrun import task
import asyncio

@task
async def print_message():
    await asyncio.sleep(1)
    print("Hello, I'm an async task")

asyncio.run(print_message())
'''


def run_example(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(source)
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )


def _clock(stderr: str, text: str) -> datetime:
    line = next(line for line in stderr.splitlines() if text in line)
    return datetime.strptime(re.match(r"(\d\d:\d\d:\d\d\.\d+)", line).group(1), "%H:%M:%S.%f")


def test_elevator_gathers_async_tasks_concurrently_like_prefect(script_executor, tmp_path):
    result = run_example(tmp_path, ELEVATOR)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Prefect: every elevator starts moving at once, then they stop in order of their floor.
    assert sorted(lines[:10]) == sorted(f"elevator moving to floor {floor}" for floor in range(1, 11)), lines
    assert lines[10:] == [f"elevator stops on floor {floor}" for floor in range(1, 11)], lines
    assert "Finished in state Completed" in result.stderr
    took = (_clock(result.stderr, "Finished in state") - _clock(result.stderr, "Beginning flow run")).total_seconds()
    assert 10 <= took < 14, f"the flow took {took:.1f} s; the longest task sleeps 10 s"


def test_async_task_called_outside_a_flow_runs_with_asyncio_run_like_prefect(tmp_path):
    result = run_example(tmp_path, ASYNC_TASK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Hello, I'm an async task"]
