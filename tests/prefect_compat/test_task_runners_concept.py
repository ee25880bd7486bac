"""Prefect's task runners concept page: its futures examples, with `prefect` -> `dagrun` in the
imports. (Its elevators are in test_elevator_examples.py.)

Source: PrefectHQ/prefect docs/v3/concepts/task-runners.mdx
"""

from __future__ import annotations

from prefect_examples import load_example, on_executor, run_script, script_executor  # noqa: F401

HELLO_FLOW = '''\
from dagrun import flow, task

@task
def say_hello(name):
    return f"Hello {name}!"

@task
def print_result(result):
    print(type(result))
    print(result)

@flow(name="hello-flow")
def hello_world():
    future = say_hello.submit("Marvin")
    print_result.submit(future).wait()

hello_world()
'''

RESULT_42 = '''\
from dagrun import flow, task

@task
def my_task():
    return 42

@flow
def my_flow():
    future = my_task.submit()
    result = future.result()
    print(result)

my_flow()
'''

RESULT_WITHOUT_RAISING = '''\
from dagrun import flow, task

@task
def my_task():
    return "I'm a task!"


@flow
def my_flow():
    future = my_task.submit()
    result = future.result(raise_on_failure=False)
    if future.state.is_failed():
        # `result` is an exception! handle accordingly
        ...
    else:
        # `result` is the expected return value of our task
        ...
'''


def test_a_future_passed_to_a_submitted_task_is_resolved_to_its_value(script_executor, tmp_path):
    result = run_script(tmp_path, HELLO_FLOW)  # print_result prints on a worker: a script sees it
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["<class 'str'>", "Hello Marvin!"]


def test_future_result_blocks_for_the_value(on_executor, tmp_path, capsys):
    load_example(tmp_path, RESULT_42)
    assert capsys.readouterr().out.splitlines() == ["42"]


def test_result_without_raising_leaves_the_check_to_the_flow(on_executor, tmp_path):
    example = load_example(tmp_path, RESULT_WITHOUT_RAISING)
    assert example.my_flow(return_state=True).is_completed()
