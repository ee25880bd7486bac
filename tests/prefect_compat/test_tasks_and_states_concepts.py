"""Prefect's tasks and states concept pages, their examples with `prefect` -> `dagrun` in the
imports.

Sources: PrefectHQ/prefect docs/v3/concepts/tasks.mdx and docs/v3/concepts/states.mdx.
Out of scope: `send_email.delay(...)` (background tasks served by Prefect task workers through
a Prefect server), the hook signatures importing `prefect.client.schemas.objects` (Prefect's
API client), and `quote` / `opaque` from `prefect.utilities.annotations` (no dagrun module of
that name: listed in the report).
"""

from __future__ import annotations

import pytest

from prefect_examples import flow_runs, load_example, messages, on_executor, run_script, task_run_states  # noqa: F401

EXPLAIN_TASKS = '''\
from dagrun import task

@task(log_prints=True)
def explain_tasks():
    print("run any python code here!")
    print("but maybe just a little bit")

if __name__ == "__main__":
    explain_tasks()
'''

ADD_INTEGERS = '''\
from dagrun import task

@task
def add_integers(a: int, b: int) -> int:
    return a + b

if __name__ == "__main__":
    result = add_integers(1, 2)  # blocks until complete, returns 3
'''

SUBMIT_ADD_INTEGERS = '''\
from dagrun import flow, task

@task
def add_integers(a: int, b: int) -> int:
    return a + b

@flow
def my_flow():
    future = add_integers.submit(1, 2)  # returns immediately
    # do other work...
    result = future.result()  # blocks until complete, returns 3
'''

FUTURE_IN_A_DATACLASS = '''\
from dataclasses import dataclass

from dagrun import flow, task


init_count = 0


@dataclass
class Pipeline:
    base_rate: float
    adjusted_rate: float = None

    def __post_init__(self):
        global init_count
        init_count += 1
        if self.adjusted_rate is None:
            self.adjusted_rate = self.base_rate * 1.5


@task
def get_rate() -> float:
    return 100.0


@task(log_prints=True)
def run_pipeline(pipeline: Pipeline):
    print(f"init_count inside task = {init_count}")
    print(f"adjusted_rate = {pipeline.adjusted_rate}")


@flow(log_prints=True)
def my_flow():
    rate_future = get_rate.submit()
    pipeline = Pipeline(base_rate=42.0, adjusted_rate=rate_future)
    print(f"init_count before task = {init_count}")
    run_pipeline(pipeline)


my_flow()
'''

TOGGLE_TASK = '''\
from dagrun import task, flow
from dagrun.states import Completed, Failed


@task
def toggle_task(fail: bool):
    if fail:
        return Failed(message="I was instructed to fail.")
    else:
        return Completed(message="I was instructed to succeed.")


@flow
def example():
    # this run will be set to a `Failed` state
    state_one = toggle_task(fail=True)

    # this run will be set to a `Completed` state
    state_two = toggle_task(fail=False)

    # similarly, the flow run will fail because we return a `Failed` state
    return state_one, state_two
'''

RETURN_STATE = '''\
from dagrun import flow, task


@task
def add_one(x):
    return x + 1


@flow
def my_flow():
    result = add_one(1)
    assert isinstance(result, int) and result == 2

    state = add_one(1, return_state=True)
    assert state.is_completed() is True
    assert state.result() == 2
'''


def test_a_task_called_as_a_script_logs_its_prints(tmp_path):
    """A task outside any flow runs in-process: no executor is involved."""
    result = run_script(tmp_path, EXPLAIN_TASKS)
    assert result.returncode == 0, result.stderr
    logged = [line for line in result.stderr.splitlines() if "INFO" in line]
    assert any(line.endswith("run any python code here!") for line in logged), result.stderr
    assert any(line.endswith("but maybe just a little bit") for line in logged), result.stderr


def test_a_task_called_outside_a_flow_returns_its_value(tmp_path):
    example = load_example(tmp_path, ADD_INTEGERS)
    assert example.add_integers(1, 2) == 3
    assert run_script(tmp_path, ADD_INTEGERS).returncode == 0


def test_submit_returns_a_future_whose_result_blocks_for_the_value(on_executor, tmp_path):
    example = load_example(tmp_path, SUBMIT_ADD_INTEGERS)
    assert example.my_flow(return_state=True).is_completed()
    [run] = flow_runs()
    assert [(name.split("-")[0], state) for name, state in task_run_states(run)] == [("add_integers", "Completed")]


def test_a_future_inside_a_dataclass_argument_is_resolved(on_executor, tmp_path, run_logs):
    load_example(tmp_path, FUTURE_IN_A_DATACLASS)  # the example calls my_flow() at module level
    logged = messages(run_logs)
    # Prefect resolves the future nested in the dataclass before the task runs.
    assert "adjusted_rate = 100.0" in logged, logged
    assert "init_count before task = 1" in logged, logged


def test_states_returned_by_tasks_set_their_runs_states_and_fail_the_flow(on_executor, tmp_path):
    example = load_example(tmp_path, TOGGLE_TASK)
    state = example.example(return_state=True)
    assert state.is_failed(), state
    [run] = flow_runs()
    assert [state for _, state in task_run_states(run)] == ["Failed", "Completed"]
    assert [task_run["message"] for task_run in run["task_runs"]] == [
        "I was instructed to fail.", "I was instructed to succeed."
    ]


def test_a_direct_call_returns_the_value_and_return_state_the_state(on_executor, tmp_path):
    example = load_example(tmp_path, RETURN_STATE)
    state = example.my_flow(return_state=True)  # the example's asserts run in the flow body
    assert state.is_completed(), state
