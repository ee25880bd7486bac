"""Prefect 3's decorator options, on every executor: code ported from Prefect with only its
imports changed keeps its caching, naming, retry and task-runner behaviour, and a Prefect
option dagrun lacks fails at decoration with one line saying what to use instead."""

from __future__ import annotations

import json
import logging
import warnings

import pydantic
import pytest

from console_script import dagrun as dagrun_cli
from dagrun import flow, task
from dagrun.cache_policies import FLOW_PARAMETERS, INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE
from dagrun.errors import ConfigError, ParameterValidationError
from dagrun.executors import InProcessExecutor
from dagrun.tasks import exponential_backoff


def shown_runs() -> list[dict]:
    """Every flow run in the history, newest first, each with its task runs (`runs show`)."""
    listed = json.loads(dagrun_cli("runs", "ls", "--json").stdout)
    return [json.loads(dagrun_cli("runs", "show", run["id"], "--json").stdout) for run in listed]


# ---------------------------------------------------------------- cache_policy / persist_result
def test_cache_policy_inputs_minus_an_argument_reuses_across_runs(executor, calls):
    @task(cache_policy=INPUTS - "debug")
    def double(x, debug=False):
        calls.record(f"double {x}")
        return 2 * x

    @flow(executor=executor)
    def pipeline(x: int, debug: bool):
        return double(x, debug=debug)

    assert pipeline(2, False) == 4
    assert pipeline(2, True) == 4  # `debug` is not in the key: reused
    assert pipeline(3, False) == 6  # another input: computed
    assert calls.lines() == ["double 2", "double 3"]


def test_cache_policy_task_source_ignores_inputs(executor, calls):
    @task(cache_policy=TASK_SOURCE)
    def snapshot(x):
        calls.record(f"snapshot {x}")
        return x

    @flow(executor=executor)
    def pipeline(x: int):
        return snapshot(x)

    assert pipeline(1) == 1
    assert pipeline(2) == 1  # as in Prefect: the key is the code alone
    assert calls.lines() == ["snapshot 1"]


def test_cache_policy_flow_parameters_and_run_id(executor, calls):
    @task(cache_policy=FLOW_PARAMETERS)
    def by_parameters(x):
        calls.record("by_parameters")
        return x

    @task(cache_policy=INPUTS + RUN_ID)
    def by_run(x):
        calls.record("by_run")
        return x

    @flow(executor=executor)
    def pipeline(day: str):
        return by_parameters(1), by_run(1)

    assert list(pipeline("mon")) == [1, 1]
    calls.path.write_text("")
    pipeline("mon")  # same flow parameters: reused; a new run id: computed
    assert calls.lines() == ["by_run"]
    pipeline("tue")  # new flow parameters: both computed (concurrently: in either order)
    assert sorted(calls.lines()) == ["by_parameters", "by_run", "by_run"]


def test_no_cache_policy_and_persist_result_false_never_cache(executor, calls):
    @task(cache_policy=NO_CACHE)
    def never(x):
        calls.record("never")
        return x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        @task(cache_policy=INPUTS, persist_result=False)
        def not_persisted(x):
            calls.record("not_persisted")
            return x

    assert any("ignoring cache_policy" in str(w.message) for w in caught)

    @flow(executor=executor)
    def pipeline():
        return never(1), not_persisted(1)

    pipeline()
    pipeline()
    assert sorted(calls.lines()) == ["never", "never", "not_persisted", "not_persisted"]


def test_persist_result_writes_the_result_but_reuses_it_only_within_the_run(executor, calls):
    @task(persist_result=True)
    def fetch(x):
        calls.record("fetch")
        return x

    @flow(executor=executor)
    def pipeline():
        return fetch(5)

    assert pipeline() == 5
    assert pipeline() == 5
    assert calls.lines() == ["fetch", "fetch"]  # Prefect's DEFAULT policy holds the run id
    runs = shown_runs()
    assert len(runs) == 2 and all(run["task_runs"][0]["cache_key"] for run in runs)
    entries = json.loads(dagrun_cli("cache", "ls", "--json").stdout)
    assert len(entries) == 2 and {entry["task"] for entry in entries} == {"fetch"}


def test_bad_cache_policy_is_one_line_at_decoration():
    with pytest.raises(ConfigError, match="cache_policy of task 'f' must be a policy from dagrun.cache_policies"):
        @task(cache_policy="INPUTS")
        def f(x):
            return x


# ---------------------------------------------------------------- run names
def test_task_and_flow_run_names_are_shown_in_the_history(executor):
    @task(task_run_name="sum-{x}-{y}")
    def add(x, y=1):
        return x + y

    @task(task_run_name=lambda: "fixed-name")
    def constant():
        return 0

    @task(task_run_name=lambda parameters: f"scaled-by-{parameters['factor']}")
    def scale(value, factor):
        return value * factor

    @flow(executor=executor, flow_run_name="etl-{day}")
    def pipeline(day: str):
        total = add(2)
        constant()
        return scale(total, factor=10)

    assert pipeline("2026-11-25") == 30
    [run] = shown_runs()
    assert run["flow_run_name"] == "etl-2026-11-25"
    names = [task_run["task_run_name"] for task_run in run["task_runs"]]
    assert sorted(names) == ["fixed-name", "scaled-by-10", "sum-2-1"]


def test_run_name_naming_a_missing_parameter_fails_at_decoration():
    with pytest.raises(ConfigError, match=r"task_run_name of 'add' uses '\{z\}', which is not a parameter"):
        @task(task_run_name="add-{z}")
        def add(x, y):
            return x + y

    with pytest.raises(ConfigError, match=r"flow_run_name of 'etl' uses '\{month\}'"):
        @flow(flow_run_name="etl-{month}")
        def etl(day):
            return day


# ---------------------------------------------------------------- retries
def test_exponential_backoff_from_dagrun_tasks(executor, calls, run_logs):
    @task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=0.1))
    def flaky():
        calls.record("attempt")
        if len(calls.lines()) < 3:
            raise ConnectionError("try again")
        return "ok"

    @flow(executor=executor)
    def pipeline():
        return flaky()

    assert pipeline() == "ok"
    messages = [record.getMessage() for record in run_logs]
    assert any("Retry 1/2 of 'flaky' in 0.1 s after ConnectionError" in m for m in messages)
    assert any("Retry 2/2 of 'flaky' in 0.2 s after ConnectionError" in m for m in messages)


def test_retry_condition_fn_with_prefects_signature(executor, calls):
    def retry_on_timeouts(task, task_run, state) -> bool:
        calls.record(f"asked {task.name} run_count={task_run.run_count}")
        try:
            state.result()
        except TimeoutError:
            return True
        except Exception:
            return False
        return False

    @task(retries=5, retry_condition_fn=retry_on_timeouts)
    def call_api():
        attempts = sum(1 for line in calls.lines() if line == "attempt") + 1
        calls.record("attempt")
        raise TimeoutError("slow") if attempts < 2 else KeyError("gone")

    @flow(executor=executor)
    def pipeline():
        call_api()

    with pytest.raises(KeyError, match="gone"):
        pipeline()
    assert calls.lines() == [
        "attempt", "asked call_api run_count=1", "attempt", "asked call_api run_count=2",
    ]


def test_retry_condition_fn_of_wrong_arity_keeps_the_users_exception(executor, calls):
    @task(retries=3, retry_condition_fn=lambda: True)
    def broken():
        calls.record("attempt")
        raise ValueError("the user's error")

    @flow(executor=executor)
    def pipeline():
        broken()

    state = pipeline(return_state=True)
    assert state.is_failed() and isinstance(state.exception, ValueError)
    assert str(state.exception) == "the user's error"
    assert any("retry_condition_fn" in note and "not retried" in note for note in state.exception.__notes__)
    assert calls.lines() == ["attempt"]


# ---------------------------------------------------------------- logging
def test_get_run_logger_from_dagrun_logging(executor, run_logs):
    from dagrun import logs
    from dagrun.logging import get_run_logger

    assert logs.logging is logging  # dagrun's own modules still get the standard library's

    @task
    def greet(name):
        get_run_logger().info("hello %s", name)

    @flow(executor=executor)
    def pipeline():
        greet("prefect")

    pipeline()
    assert "hello prefect" in [record.getMessage() for record in run_logs]


# ---------------------------------------------------------------- unsupported options
@pytest.mark.parametrize("option, hint", [
    ("result_storage_key", "cache_key_fn"),
    ("cache_result_in_memory", "drop it"),
    ("result_storage", "@flow(result_storage=...)"),
    ("on_commit", "transactions"),
    ("viz_return_value", "visualize"),
    ("asset_deps", "assets"),
])
def test_unsupported_prefect_task_option_fails_at_decoration(option, hint):
    with pytest.raises(ConfigError) as raised:
        @task(**{option: None})
        def extract():
            return 1

    message = str(raised.value)
    assert "\n" not in message and f"@task 'extract': Prefect's option '{option}' is not supported" in message
    assert hint in message


@pytest.mark.parametrize("option, hint", [
    ("on_cancellation", "on_failure"),
    ("on_crashed", "on_failure"),
    ("persist_result", "@task(persist_result=True)"),
    ("result_serializer", "@task(result_serializer"),
    ("cache_result_in_memory", "drop it"),
])
def test_unsupported_prefect_flow_option_fails_at_decoration(option, hint):
    with pytest.raises(ConfigError) as raised:
        @flow(**{option: None})
        def etl():
            return 1

    message = str(raised.value)
    assert "\n" not in message and f"@flow 'etl': Prefect's option '{option}' is not supported" in message
    assert hint in message


def test_misspelled_option_suggests_the_right_one():
    with pytest.raises(ConfigError, match="@task 'f': unknown option 'retires'; did you mean 'retries'"):
        @task(retires=3)
        def f():
            return 1


# ---------------------------------------------------------------- parameter errors
class Window(pydantic.BaseModel):
    days: int


class Config(pydantic.BaseModel):
    window: Window
    tags: list[int] = []


def test_nested_model_error_names_the_field_path_and_its_type():
    @flow(executor=InProcessExecutor())
    def report(config: Config):
        return config

    with pytest.raises(ParameterValidationError) as raised:
        report({"window": {"days": "many"}, "tags": [1, "b"]})
    message = str(raised.value)
    assert "parameter 'config.window.days' expected int, got 'many'" in message
    assert "parameter 'config.tags.1' expected int, got 'b'" in message
    assert "expected Config" not in message

