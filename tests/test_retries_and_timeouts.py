"""Retry policies, timeouts and flow retries (DESIGN section 3), on both executors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dagrun import exponential_backoff, flow, task
from dagrun.errors import ConfigError, FlowTimeoutError, TaskTimeoutError
from dagrun.retry import RetryPolicy


def attempt_number(path: str) -> int:
    """Count this call in `path` and return how many calls there have been."""
    with open(path, "a") as handle:
        handle.write("x")
    return len(Path(path).read_text())


def messages(records) -> list[str]:
    return [record.getMessage() for record in records]


def test_transient_failures_are_retried_and_logged(executor, tmp_path, run_logs):
    counter = str(tmp_path / "attempts")

    @task(retries=3, retry_delay_seconds=[0.05, 0.1])
    def flaky():
        attempt = attempt_number(counter)
        if attempt < 3:
            raise ConnectionError(f"refused {attempt}")
        return attempt

    @flow(executor=executor)
    def pipeline():
        return flaky()

    assert pipeline() == 3
    retry_lines = [m for m in messages(run_logs) if m.startswith("Retry")]
    assert retry_lines == [
        "Retry 1/3 of 'flaky' in 0.1 s after ConnectionError: refused 1",
        "Retry 2/3 of 'flaky' in 0.1 s after ConnectionError: refused 2",
    ]


def test_retries_exhausted_fail_with_the_last_error(executor, tmp_path):
    counter = str(tmp_path / "attempts")

    @task(retries=2)
    def always_fails():
        raise RuntimeError(f"attempt {attempt_number(counter)}")

    @flow(executor=executor)
    def pipeline():
        always_fails()

    with pytest.raises(RuntimeError, match="attempt 3"):
        pipeline()
    assert Path(counter).read_text() == "xxx"


def test_retry_on_limits_which_exceptions_are_retried(executor, tmp_path):
    counter = str(tmp_path / "attempts")

    @task(retries=3, retry_on=(ConnectionError,))
    def wrong_kind():
        attempt_number(counter)
        raise KeyError("not transient")

    @flow(executor=executor)
    def pipeline():
        wrong_kind()

    with pytest.raises(KeyError):
        pipeline()
    assert Path(counter).read_text() == "x"


def test_retry_condition_fn_decides(executor, tmp_path):
    counter = str(tmp_path / "attempts")

    def only_temporary(task, exception):
        return "temporary" in str(exception)

    @task(retries=5, retry_condition_fn=only_temporary)
    def sometimes():
        attempt = attempt_number(counter)
        raise ValueError("temporary" if attempt < 2 else "permanent")

    @flow(executor=executor)
    def pipeline():
        sometimes()

    with pytest.raises(ValueError, match="permanent"):
        pipeline()
    assert Path(counter).read_text() == "xx"


def test_retry_delays_number_list_callable_backoff_and_jitter():
    assert RetryPolicy(retries=3, delay=2).delay_for(3) == 2
    listed = RetryPolicy(retries=4, delay=[1, 2, 4])
    assert [listed.delay_for(a) for a in (1, 2, 3, 4)] == [1, 2, 4, 4]
    assert RetryPolicy(retries=2, delay=lambda attempt: attempt * 10).delay_for(2) == 20
    backoff = exponential_backoff(0.5)
    assert [backoff(a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    jittered = RetryPolicy(retries=1, delay=10, jitter_factor=0.5)
    samples = {jittered.delay_for(1) for _ in range(50)}
    assert len(samples) > 1 and all(5 <= s <= 15 for s in samples)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"retries": -1}, "retries must be an int >= 0"),
        ({"retry_delay_seconds": "soon"}, "retry_delay_seconds must be"),
        ({"retry_delay_seconds": [1, -2]}, "list must hold numbers >= 0"),
        ({"retry_jitter_factor": -1}, "retry_jitter_factor"),
        ({"retry_on": "ValueError"}, "retry_on must be exception types"),
        ({"timeout_seconds": 0}, "timeout_seconds of task 'noop' must be a number > 0"),
        ({"resources": {"GPU": "one"}}, "resources of task 'noop'"),
    ],
)
def test_bad_task_options_fail_at_decoration_with_a_clear_message(options, fragment):
    def noop():
        return None

    with pytest.raises(ConfigError, match=fragment):
        task(noop, **options)


def test_task_timeout_fails_the_attempt_and_is_retried(executor, tmp_path):
    counter = str(tmp_path / "attempts")

    @task(timeout_seconds=0.3, retries=1)
    def slow_first():
        if attempt_number(counter) == 1:
            time.sleep(3)
        return "fast second attempt"

    @task(timeout_seconds=0.2)
    def always_slow():
        time.sleep(3)

    @flow(executor=executor)
    def pipeline():
        return slow_first()

    @flow(executor=executor)
    def timing_out():
        always_slow()

    assert pipeline() == "fast second attempt"
    with pytest.raises(TaskTimeoutError, match="timeout_seconds=0.2"):
        timing_out()


def test_flow_timeout_cancels_pending_tasks(dask_executor, tmp_path):
    """On Dask (in-process runs each task at once, so nothing is ever pending): a task still
    running and the one waiting for it are Cancelled when the flow's time is up, and the run
    ends then, not when the slow task would have finished."""
    release = tmp_path / "release"
    futures = {}

    @task
    def slow() -> int:
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return 1

    @task
    def after_slow(value: int) -> int:
        return value + 1

    @flow(executor=dask_executor, timeout_seconds=1.0)
    def pipeline():
        futures["slow"] = slow()
        futures["pending"] = after_slow(futures["slow"])
        return futures["pending"]

    start = time.monotonic()
    try:
        with pytest.raises(FlowTimeoutError, match="exceeded its timeout_seconds"):
            pipeline()
        elapsed = time.monotonic() - start
    finally:
        release.touch()  # frees the worker thread the slow task holds
    assert 1.0 <= elapsed < 6.0, f"the run ended {elapsed:.1f} s after it started, its timeout is 1 s"
    for name, future in futures.items():
        assert future.state.name == "Cancelled", (name, future.state)
        assert "Cancelled with flow run" in future.state.message, (name, future.state.message)


def test_flow_retries_reuse_tasks_completed_in_the_failed_attempt(executor, tmp_path):
    expensive_calls = str(tmp_path / "expensive")
    flaky_calls = str(tmp_path / "flaky")

    @task
    def expensive(x):
        attempt_number(expensive_calls)
        return x * 10

    @task
    def flaky_step(value):
        if attempt_number(flaky_calls) == 1:
            raise ConnectionError("first attempt of the flow fails")
        return value + 1

    @flow(executor=executor, retries=1, retry_delay_seconds=0)
    def pipeline(x: int):
        return flaky_step(expensive(x))

    assert pipeline(4) == 41
    assert Path(expensive_calls).read_text() == "x"  # reused, not recomputed
    assert Path(flaky_calls).read_text() == "xx"


def test_task_with_retries_called_outside_a_flow_retries_and_logs(tmp_path, run_logs):
    counter = str(tmp_path / "attempts")

    @task(retries=2, retry_delay_seconds=0)
    def flaky_once():
        attempt = attempt_number(counter)
        if attempt == 1:
            raise ConnectionError("refused once")
        return attempt

    assert flaky_once() == 2
    assert messages(run_logs) == ["Retry 1/2 of 'flaky_once' in 0.0 s after ConnectionError: refused once"]
