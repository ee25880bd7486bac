"""Prefect's how-to pages on writing and running workflows and passing inputs, their examples
with `prefect` -> `dagrun` in the imports.

Sources (PrefectHQ/prefect):
- docs/v3/how-to-guides/workflows/write-and-run.mdx. Its "Task timeout behavior" example
  imports `ProcessPoolTaskRunner` (out of scope: Dask is dagrun's process pool). The
  `even_or_odd` example lacks `import random` (a `NameError` in Prefect too): added here.
- docs/v3/how-to-guides/workflows/pass-inputs.mdx
"""

from __future__ import annotations

import time

import pytest

from prefect_examples import flow_runs, load_example, messages, on_executor, task_run_states  # noqa: F401

MY_WORKFLOW = '''\
from dagrun import flow


@flow
def my_workflow() -> str:
    return "Hello, world!"
'''

METHODS = '''\
from dagrun import flow


class MyClass:

    @flow
    def my_instance_method(self):
        return "Hello, from an instance method!"


    @flow
    @classmethod
    def my_class_method(cls):
        return "Hello, from a class method!"


    @flow
    @staticmethod
    def my_static_method():
        return "Hello, from a static method!"


MyClass().my_instance_method()
MyClass.my_class_method()
MyClass.my_static_method()
'''

GENERATOR_FLOW = '''\
from dagrun import flow


@flow
def generator():
    for i in range(10):
        yield i


for val in generator():
    print(val)
'''

EVEN_OR_ODD = '''\
import random  # missing from the docs' example

from dagrun import flow, task


@task
def generate_a_number():
    return random.randint(0, 100)


@flow
def is_number_even(number: int):
    return number % 2 == 0


@flow
def even_or_odd():
    number = generate_a_number()
    if is_number_even(number):
        print("The number is even")
    else:
        print("The number is odd")
'''

SHOW_TIMEOUTS = '''\
from dagrun import flow
import time

@flow(timeout_seconds=1, log_prints=True)
def show_timeouts():
    print("I will execute")
    time.sleep(5)
    print("I will not execute")
'''

NAMED_TASK = '''\
from dagrun import task


@task(name="hello-task", description="This task says hello.")
def my_task():
    print("Hello, I'm a task")
'''

TASK_RUN_NAME_TEMPLATE = '''\
import datetime
from dagrun import flow, task


@task(name="My Example Task", 
      description="An example task for a tutorial.",
      task_run_name="hello-{name}-on-{date:%A}")
def my_task(name, date):
    pass


@flow
def my_flow():
    # creates a run with a name like "hello-marvin-on-Thursday"
    my_task(name="marvin", date=datetime.datetime.now(datetime.timezone.utc))

if __name__ == "__main__":
    my_flow()
'''

TASK_RUN_NAME_FUNCTION = '''\
import datetime
from dagrun import flow, task


def generate_task_name():
    date = datetime.datetime.now(datetime.timezone.utc)
    return f"{date:%A}-is-a-lovely-day"


@task(name="My Example Task",
      description="An example task for the docs.",
      task_run_name=generate_task_name)
def my_task(name):
    pass


@flow
def my_flow():
    # creates a run with a name like "Thursday-is-a-lovely-day"
    my_task(name="marvin")


if __name__ == "__main__":
    my_flow()  
'''

WORKFLOW_INPUTS = '''\
from dagrun import flow


@flow
def my_workflow(name: str = "World"):
    return f"Hello, {name}!"
'''

INVALID_INPUT = '''\
from dagrun import flow


@flow
def my_workflow(name: str = "World"):
    return f"Hello, {name}!"

my_workflow(name=1) # This will fail with a type validation error
'''

UNVALIDATED_INPUT = '''\
from dagrun import flow


@flow(validate_parameters=False)
def my_workflow(name: str = "World"):
    return f"Hello, {name}!"

my_workflow(name=1)
'''

PYDANTIC_INPUT = '''\
from dagrun import flow
from pydantic import BaseModel


class Model(BaseModel):
    a: int
    b: str


@flow
def flow_that_validates_parameters(model: Model): ...

flow_that_validates_parameters(
    model={"a": "WRONG", "b": "fine"}
)
'''


def _weekday() -> str:
    import datetime

    return f"{datetime.datetime.now(datetime.timezone.utc):%A}"


def test_a_flow_returns_its_value(on_executor, tmp_path):
    assert load_example(tmp_path, MY_WORKFLOW).my_workflow() == "Hello, world!"


def test_methods_can_be_flows(on_executor, tmp_path):
    example = load_example(tmp_path, METHODS)
    assert example.MyClass().my_instance_method() == "Hello, from an instance method!"
    assert example.MyClass.my_class_method() == "Hello, from a class method!"
    assert example.MyClass.my_static_method() == "Hello, from a static method!"


def test_a_generator_flow_yields_to_its_caller(on_executor, tmp_path, capsys):
    load_example(tmp_path, GENERATOR_FLOW)
    assert capsys.readouterr().out.splitlines() == [str(i) for i in range(10)]


def test_a_tasks_future_passed_to_a_subflow_becomes_its_value(on_executor, tmp_path, capsys):
    example = load_example(tmp_path, EVEN_OR_ODD)
    assert example.even_or_odd(return_state=True).is_completed()
    assert capsys.readouterr().out.splitlines() in (["The number is even"], ["The number is odd"])


def test_a_flow_timeout_ends_the_run_at_the_timeout(on_executor, tmp_path, run_logs):
    example = load_example(tmp_path, SHOW_TIMEOUTS)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        example.show_timeouts()
    took = time.monotonic() - started
    assert took < 3, f"the run ended after {took:.1f} s; its timeout is 1 s"
    logged = messages(run_logs)
    assert "I will execute" in logged and "I will not execute" not in logged, logged
    [run] = flow_runs()
    assert run["state"] == "Failed", run


def test_a_task_has_its_name_and_description(tmp_path):
    example = load_example(tmp_path, NAMED_TASK)
    assert example.my_task.name == "hello-task"
    assert example.my_task.description == "This task says hello."


def test_task_run_name_formats_the_calls_parameters(on_executor, tmp_path):
    load_example(tmp_path, TASK_RUN_NAME_TEMPLATE).my_flow()
    [run] = flow_runs()
    assert task_run_states(run) == [(f"hello-marvin-on-{_weekday()}", "Completed")]


def test_task_run_name_can_be_a_function(on_executor, tmp_path):
    load_example(tmp_path, TASK_RUN_NAME_FUNCTION).my_flow()
    [run] = flow_runs()
    assert task_run_states(run) == [(f"{_weekday()}-is-a-lovely-day", "Completed")]


def test_flow_parameters_have_defaults_and_keywords(on_executor, tmp_path):
    example = load_example(tmp_path, WORKFLOW_INPUTS)
    assert example.my_workflow(name="Marvin") == "Hello, Marvin!"
    assert example.my_workflow() == "Hello, World!"


def test_a_parameter_of_the_wrong_type_fails_validation(on_executor, tmp_path):
    with pytest.raises(Exception, match="name") as raised:
        load_example(tmp_path, INVALID_INPUT)
    assert "valid string" in str(raised.value), raised.value


def test_validate_parameters_false_passes_parameters_unchanged(on_executor, tmp_path):
    assert load_example(tmp_path, UNVALIDATED_INPUT).my_workflow(name=1) == "Hello, 1!"


def test_a_pydantic_model_parameter_names_the_bad_field(on_executor, tmp_path):
    with pytest.raises(Exception, match="valid integer") as raised:
        load_example(tmp_path, PYDANTIC_INPUT)
    assert "a" in str(raised.value) and "expected Model" not in str(raised.value), raised.value
