"""Prefect's state-change hooks and testing how-tos, their examples with `prefect` -> `dagrun`
in the imports.

Sources (PrefectHQ/prefect):
- docs/v3/how-to-guides/workflows/state-change-hooks.mdx. Out of scope: the Slack example
  (`Block.load`, Prefect settings), `prefect.logging.loggers.flow_run_logger` (Prefect's
  FlowRun API object) and `prefect.events.emit_event` (Prefect's event bus).
- docs/v3/how-to-guides/workflows/test-workflows.mdx. `prefect_test_harness` (a temporary
  Prefect server and database) is out of scope: the examples that only wrap their test in it
  run here without it. The async tests (`@pytest.mark.asyncio`) are run with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import re

from prefect_examples import load_example, on_executor, run_script, script_executor  # noqa: F401

ON_RUNNING = '''\
from dagrun import flow, task
import time

def record_start_time(task, task_run, state):
    print(f"Task {task.name} started at {time.time()}")

@task(on_running=[record_start_time])
def my_task():
    return "hello"

# Or use the decorator pattern
@task
def another_task():
    return "world"

@another_task.on_running
def log_start(task, task_run, state):
    print(f"Starting {task.name}!")

@flow
def my_flow():
    my_task()
    another_task()
'''

HOOK_KWARGS = '''\
from functools import partial
from dagrun import flow, task

data = {}

def my_hook(task, task_run, state, **kwargs):
    data.update(state=state, **kwargs)

@task
def bad_task():
    raise ValueError("meh")

@flow
def ok_with_failure_flow(x: str = "foo", y: int = 42):
    bad_task_with_a_hook = bad_task.with_options(
        on_failure=[partial(my_hook, **dict(x=x, y=y))]
    )
    # return a tuple of "bar" and the task run state
    # to avoid raising the task's exception
    return "bar", bad_task_with_a_hook(return_state=True)

_, task_run_state = ok_with_failure_flow()

assert data == {"x": "foo", "y": 42, "state": task_run_state}
'''

TEST_WITHOUT_THE_ENGINE = '''\
from dagrun import flow, task

@task
def my_favorite_task():
    return 42

@flow
def my_favorite_flow():
    val = my_favorite_task()
    return val

def test_my_favorite_task():
    assert my_favorite_task.fn() == 42
'''

DISABLE_RUN_LOGGER = '''\
from dagrun.logging import disable_run_logger

def test_my_favorite_task():
    with disable_run_logger():
        assert my_favorite_task.fn() == 42
'''

MY_FAVORITE_FLOW = '''\
from dagrun import flow

@flow
def my_favorite_flow():
    return 42

def test_my_favorite_flow():
    assert my_favorite_flow() == 42
'''

ASYNC_FLOW_TEST = '''\
import pytest
from dagrun import flow


@flow
async def my_async_flow():
    return "async result"


@pytest.mark.asyncio
async def test_my_async_flow():
    result = await my_async_flow()
    assert result == "async result"
'''

ASYNC_TASK_FN_TEST = '''\
import pytest
from dagrun import task


@task
async def fetch_data():
    return {"key": "value"}


@pytest.mark.asyncio
async def test_fetch_data():
    result = await fetch_data.fn()
    assert result == {"key": "value"}
'''

# The hooks example defines `my_flow` and leaves running it to the reader: run it as a script would.
RUN = '\n\nif __name__ == "__main__":\n    my_flow()\n'


def test_on_running_hooks_run_as_each_task_starts(script_executor, tmp_path):
    result = run_script(tmp_path, ON_RUNNING + RUN)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and re.fullmatch(r"Task my_task started at \d+\.\d+", lines[0]), lines
    assert lines[1] == "Starting another_task!", lines


def test_on_failure_hooks_take_extra_keyword_arguments(on_executor, tmp_path):
    example = load_example(tmp_path, HOOK_KWARGS)  # its assert runs at module level
    assert example.task_run_state.is_failed()


def test_a_tasks_fn_runs_without_the_engine(tmp_path):
    example = load_example(tmp_path, TEST_WITHOUT_THE_ENGINE)
    example.test_my_favorite_task()
    exec(DISABLE_RUN_LOGGER, example.__dict__)  # the docs' second version of the same test
    example.test_my_favorite_task()


def test_a_flow_is_tested_by_calling_it(on_executor, tmp_path):
    load_example(tmp_path, MY_FAVORITE_FLOW).test_my_favorite_flow()


def test_async_flows_and_task_functions_are_awaited_in_tests(on_executor, tmp_path):
    asyncio.run(load_example(tmp_path, ASYNC_FLOW_TEST).test_my_async_flow())
    asyncio.run(load_example(tmp_path, ASYNC_TASK_FN_TEST).test_fetch_data())
