"""Errors a user coming from Prefect meets say what is wrong and what to do, in one line: a
Prefect option or name dagrun lacks (also through `.with_options`), a misspelled option, a
parameter that does not fit a nested model; and a broken `retry_condition_fn` never hides the
task's own error. (The terminal showing a failed task's traceback once, without Dask's
"Compute Failed", is in test_tracebacks.py.)"""

from __future__ import annotations

import dataclasses
import subprocess
import textwrap

import pydantic
import pytest

from console_script import DAGRUN
from dagrun import flow, task
from dagrun.errors import ConfigError, ParameterValidationError
from dagrun.executors import InProcessExecutor


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- options and names
def test_with_options_answers_a_prefect_option_in_one_line():
    @task
    def extract():
        return 1

    @flow
    def etl():
        return 1

    with pytest.raises(ConfigError) as raised:
        extract.with_options(result_storage_key="{parameters[x]}.json")
    assert one_line(raised.value) == (
        "@task 'extract': Prefect's option 'result_storage_key' is not supported by dagrun; "
        "use cache_key_fn=... to choose the key of the task's stored result"
    )
    with pytest.raises(ConfigError) as raised:
        etl.with_options(on_crashed=[print])
    assert one_line(raised.value).startswith("@flow 'etl': Prefect's option 'on_crashed' is not supported")


def test_an_unknown_option_without_a_close_match_lists_the_options():
    with pytest.raises(ConfigError) as raised:
        @flow(colour="blue")
        def etl():
            return 1

    message = one_line(raised.value)
    assert message.startswith("@flow 'etl': unknown option 'colour'; dagrun's options are: ")
    assert "timeout_seconds" in message and "TypeError" not in message


def test_a_misspelled_flow_option_suggests_the_right_one():
    with pytest.raises(ConfigError, match="@flow 'etl': unknown option 'timeout'; did you mean 'timeout_seconds'"):
        @flow(timeout=5)
        def etl():
            return 1


@pytest.mark.parametrize("statement, hint", [
    ("from dagrun import get_client", "dagrun runs ls --json"),
    ("from dagrun import deploy", "dagrun serve FILE"),
])
def test_importing_a_prefect_name_dagrun_lacks_says_what_to_use(statement, hint):
    with pytest.raises(ImportError) as raised:
        exec(statement, {})
    message = one_line(raised.value)
    assert message.startswith(f"dagrun has no {statement.split()[-1]}: ")
    assert hint in message


def test_other_missing_names_stay_attribute_errors():
    import dagrun

    assert not hasattr(dagrun, "no_such_name")


# ---------------------------------------------------------------- retry_condition_fn
def test_a_retry_condition_that_raises_keeps_the_users_error_on_the_terminal(tmp_path):
    """`dagrun run`: the task's own exception is what fails the run, and the note says why it
    was not retried; the condition's own TypeError is never the error shown."""
    (tmp_path / "flows.py").write_text(textwrap.dedent(
        '''
        from dagrun import flow, task

        def only_timeouts(exception):  # Prefect 2's idea of the signature: one argument
            return isinstance(exception, TimeoutError)

        @task(retries=2, retry_condition_fn=only_timeouts)
        def fetch():
            raise ConnectionError("the user's error")

        @flow
        def pipeline():
            fetch()
        '''
    ))
    result = subprocess.run(
        [*DAGRUN, "run", "flows.py:pipeline"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Flow run failed: ConnectionError: the user's error (")
    assert "retry_condition_fn" in last and "not retried" in last and "retry_condition_fn(task, task_run, state)" in last
    assert result.stderr.count("Retry ") == 0


# ---------------------------------------------------------------- nested parameters
class Window(pydantic.BaseModel):
    days: int


@dataclasses.dataclass
class Span:
    start: int
    window: Window


@pytest.mark.parametrize("parameters, expected", [
    ({"windows": [{"days": "x"}]}, "parameter 'windows.0.days' expected int, got 'x'"),
    ({"by_name": {"a": {"days": "y"}}}, "parameter 'by_name.a.days' expected int, got 'y'"),
    ({"maybe": {"days": "z"}}, "parameter 'maybe.days' expected int, got 'z'"),
    ({"span": {"start": 1, "window": {"days": "q"}}}, "parameter 'span.window.days' expected int, got 'q'"),
    ({"maybe": 5}, "parameter 'maybe' expected Window | None, got 5"),
])
def test_a_nested_field_error_names_its_path_and_its_own_type(parameters, expected):
    @flow(executor=InProcessExecutor())
    def report(
        windows: list[Window] = [],  # noqa: B006 - a flow parameter's default, never mutated
        by_name: dict[str, Window] | None = None,
        maybe: Window | None = None,
        span: Span | None = None,
    ):
        return windows

    with pytest.raises(ParameterValidationError) as raised:
        report(**parameters)
    message = one_line(raised.value)
    assert expected in message
    assert "expected Window," not in message  # the field's own type, not its model's
    assert "__main__" not in message and "test_misleading_errors." not in message
