"""Prefect's flows concept page, its examples with `prefect` -> `dagrun` in the imports.

Source: PrefectHQ/prefect docs/v3/concepts/flows.mdx (and the snippet it includes,
docs/snippets/final-flow-state.mdx). `schleeb.parameters.model_json_schema()` (Prefect's API
parameter schema, marked `notest` in the docs) is out of scope.
"""

from __future__ import annotations

import inspect

import pytest

from prefect_examples import load_example, messages, on_executor  # noqa: F401

EXPLAIN_FLOWS = '''\
from dagrun import flow

@flow(log_prints=True)
def explain_flows():
    print("run any python code here!")
    print("encapsulate that business logic!")

if __name__ == "__main__":
    explain_flows()
'''

BEEP = '''\
from dagrun import flow

@flow
def beep():
    print("boop")

beep()
'''

SCHLEEB = '''\
import inspect
from dagrun import flow

@flow
def schleeb(x: int, y: str, z: bool | None = None):
    print(f"x: {x}, y: {y}, z: {z}")

inspect.signature(schleeb)
'''

RETURNED_GENERATOR = '''\
from dagrun import flow

def gen():
    yield from [1, 2, 3]
    print('Generator consumed!')

@flow
def f():
    return gen()

f()  # prints 'Generator consumed!'
'''

YIELDED_GENERATOR = '''\
from dagrun import flow

def gen():
    yield from [1, 2, 3]
    print('Generator consumed!')

@flow
def f():
    yield gen()

generator = next(f())
list(generator) # prints 'Generator consumed!'
'''

RETURN_A_FUTURE = '''\
from dagrun import flow, task

@task
def always_fails_task():
    raise ValueError("I fail successfully")

@task
def always_succeeds_task():
    print("I'm fail safe!")
    return "success"

@flow
def always_succeeds_flow():
    x = always_fails_task.submit().result(raise_on_failure=False)
    y = always_succeeds_task.submit(wait_for=[x])
    return y

if __name__ == "__main__":
    always_succeeds_flow()
'''

RETURN_MULTIPLE = '''\
from dagrun import task, flow

@task
def always_fails_task():
    raise ValueError("I am bad task")

@task
def always_succeeds_task():
    return "foo"

@flow
def always_succeeds_flow():
    return "bar"

@flow
def always_fails_flow():
    x = always_fails_task()
    y = always_succeeds_task()
    z = always_succeeds_flow()
    return x, y, z
'''

RETURN_A_MANUAL_STATE = '''\
from dagrun import task, flow
from dagrun.states import Completed, Failed

@task
def always_fails_task():
    raise ValueError("I fail successfully")

@task
def always_succeeds_task():
    print("I'm fail safe!")
    return "success"

@flow
def always_succeeds_flow():
    x = always_fails_task.submit()
    y = always_succeeds_task.submit()
    if y.result() == "success":
        return Completed(message="I am happy with this result")
    else:
        return Failed(message="How did this happen!?")

if __name__ == "__main__":
    always_succeeds_flow()
'''

CUSTOM_NAMED_STATE = '''\
from dagrun import flow
from dagrun.states import Completed

@flow
def my_flow(work_to_do: bool):
    if not work_to_do:
        return Completed(message="No work to do 💤", name="Skipped")
    else:
        return Completed(message="Work was done 💪")

if __name__ == "__main__":
    my_flow(work_to_do=False)
'''

HANDLED_FAILED_STATE = '''\
from dagrun import flow, task


@task
def add_one(x):
    return x + 1


@flow
def my_flow():
    # avoided raising an exception via `return_state=True`
    state = add_one("1", return_state=True)
    assert state.is_failed()

    # the flow function returns successfully!
    return
'''


def test_log_prints_turns_the_flows_prints_into_log_lines(on_executor, tmp_path, run_logs):
    example = load_example(tmp_path, EXPLAIN_FLOWS)
    example.explain_flows()
    logged = messages(run_logs)
    assert "run any python code here!" in logged and "encapsulate that business logic!" in logged, logged


def test_calling_a_flow_creates_a_flow_run(on_executor, tmp_path, capsys):
    load_example(tmp_path, BEEP)  # the example calls beep() at module level
    assert capsys.readouterr().out.splitlines() == ["boop"]


def test_a_flow_keeps_its_functions_signature(tmp_path):
    example = load_example(tmp_path, SCHLEEB)
    assert str(inspect.signature(example.schleeb)) == "(x: int, y: str, z: bool | None = None)"


def test_a_returned_generator_is_consumed_into_a_list(on_executor, tmp_path, capsys):
    example = load_example(tmp_path, RETURNED_GENERATOR)
    assert capsys.readouterr().out.splitlines() == ["Generator consumed!"]
    assert example.f() == [1, 2, 3]


def test_a_yielded_generator_is_left_to_the_caller(on_executor, tmp_path, capsys):
    example = load_example(tmp_path, YIELDED_GENERATOR)
    assert capsys.readouterr().out.splitlines() == ["Generator consumed!"]
    assert list(next(example.f())) == [1, 2, 3]


def test_returning_the_future_of_a_task_that_succeeded_completes_the_flow(on_executor, tmp_path):
    example = load_example(tmp_path, RETURN_A_FUTURE)
    state = example.always_succeeds_flow(return_state=True)
    assert state.is_completed(), state  # the failed task's result was looked at, not raised
    assert state.result() == "success"
    assert example.always_succeeds_flow() == "success"


def test_returning_a_failed_future_among_values_fails_the_flow(on_executor, tmp_path):
    example = load_example(tmp_path, RETURN_MULTIPLE)
    state = example.always_fails_flow(return_state=True)
    assert state.is_failed(), state
    with pytest.raises(ValueError, match="I am bad task"):
        example.always_fails_flow()


def test_returning_a_completed_state_sets_the_final_state(on_executor, tmp_path):
    example = load_example(tmp_path, RETURN_A_MANUAL_STATE)
    state = example.always_succeeds_flow(return_state=True)
    assert state.is_completed() and state.message == "I am happy with this result", state


def test_a_custom_named_state_keeps_its_name(on_executor, tmp_path):
    example = load_example(tmp_path, CUSTOM_NAMED_STATE)
    skipped = example.my_flow(work_to_do=False, return_state=True)
    assert skipped.name == "Skipped" and skipped.is_completed() and skipped.message == "No work to do 💤"
    done = example.my_flow(work_to_do=True, return_state=True)
    assert done.name == "Completed" and done.message == "Work was done 💪"


def test_a_failed_task_state_the_flow_handled_does_not_fail_it(on_executor, tmp_path):
    example = load_example(tmp_path, HANDLED_FAILED_STATE)
    state = example.my_flow(return_state=True)
    assert state.is_completed(), state
    assert example.my_flow() is None
