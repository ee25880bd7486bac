"""`isinstance(add_one(1), int)` is True for a direct call in a sync flow body, as Prefect's
direct call returns the value (the future's `__class__` is its value's), and nothing else waits
for it: `isinstance(f, TaskFuture)`, `.submit()` / `.map()` futures, and dagrun's own handling
of futures (arguments, containers, return values) never ask a future for its value's class.

Order and overlap are proven by what the tasks record (their own start and end, lines in a
file the flow body writes), never by the test's wall clock.
"""

from __future__ import annotations

import time

import pytest

from dagrun import flow, task
from dagrun.executors import DaskExecutor, ThreadExecutor
from dagrun.futures import TaskFuture
from test_future_values import record, wait_for_line


@pytest.fixture(params=["threads", "dask"])
def concurrent_executor(request: pytest.FixtureRequest):
    """Executors that run a task while the flow body goes on (the in-process one runs each
    call to its end before returning)."""
    if request.param == "threads":
        return ThreadExecutor(max_workers=4)
    return DaskExecutor(address=request.getfixturevalue("local_cluster").scheduler_address)


@task
def gated(path: str) -> int:
    """1 when the flow body wrote "checked" while this task was running, else 0."""
    return 1 if wait_for_line(path, "checked", 10) else 0


@task
def add_one(x: int) -> int:
    return x + 1


@task
def boom() -> int:
    raise ValueError("no int today")


@task
def span(i: int) -> tuple[float, float]:
    start = time.time()
    time.sleep(0.05)
    return start, time.time()


@task
def collect(spans: list) -> list:
    return spans


def test_isinstance_of_a_direct_call_is_its_values_class(executor):
    @flow(executor=executor)
    def my_flow():
        result = add_one(1)
        return isinstance(result, int) and result == 2, isinstance(result, str), type(result) is TaskFuture

    assert my_flow() == (True, False, True)


def test_type_checks_and_passing_futures_on_do_not_wait(concurrent_executor, tmp_path):
    """The checks, and calls passing the futures on (nested in containers, to a direct call,
    `.submit`, `.map`), run while the gated tasks wait for the body's "checked" line: had
    dagrun waited for one of them on the way, it would have returned 0 (after its gate's
    timeout) instead of 1."""
    path = str(tmp_path / "gate")

    @flow(executor=concurrent_executor)
    def checks(path: str):
        direct = gated(path)
        submitted = gated.submit(path)
        mapped = gated.map([path])
        answers = [
            isinstance(direct, TaskFuture), isinstance(submitted, TaskFuture),
            isinstance(submitted, int), isinstance(mapped[0], int), isinstance(mapped, list),
            direct.done(),
        ]
        passed_on = [
            collect({"direct": [direct], "both": (direct, submitted), "mapped": mapped}),
            collect.submit([direct, {direct}]), collect.map([[direct], [submitted]]),
            add_one(direct),
        ]
        answers.append(direct.done())
        record(path, "checked")
        return answers, isinstance(direct, int), direct, submitted, mapped, passed_on

    answers, direct_is_int, direct, submitted, mapped, passed_on = checks(path)
    assert answers == [True, True, False, False, True, False, False]
    assert direct_is_int is True and direct == 1 and submitted == 1 and mapped == [1]
    assert passed_on == [
        {"direct": [1], "both": (1, 1), "mapped": [1]}, [1, {1}], [[1], [1]], 2,
    ]


def test_200_direct_calls_kept_in_a_list_and_passed_on_run_concurrently(concurrent_executor):
    @flow(executor=concurrent_executor)
    def fan_out():
        spans = [span(i) for i in range(200)]  # direct calls, kept: they run concurrently
        passed = collect({"spans": spans, "first": spans[:1]})["spans"]
        return passed, spans

    passed, spans = fan_out()
    assert passed == spans and len(spans) == 200
    ordered = sorted(spans)
    overlapping = sum(1 for (_, end), (start, _) in zip(ordered, ordered[1:]) if start < end)
    assert overlapping >= 100, f"only {overlapping} of 199 neighbouring runs overlapped"


def test_isinstance_on_a_failed_direct_call_raises_its_error(executor):
    @flow(executor=executor)
    def checks():
        value = boom()
        if isinstance(value, int):  # Prefect's direct call would have raised already
            return "unreachable"
        return "not an int"

    with pytest.raises(ValueError, match="no int today"):
        checks()


def test_a_future_in_an_async_flow_is_a_task_future(executor):
    """Where an event loop runs, asyncio asks futures for `__class__` (`gather`, `isfuture`):
    a future there is a TaskFuture and is awaited for its value."""
    import asyncio

    @flow(executor=executor)
    async def async_checks():
        first, second = add_one(1), add_one(2)
        kinds = isinstance(first, int), isinstance(first, TaskFuture), asyncio.isfuture(first)
        return kinds, await asyncio.gather(first, second)

    assert asyncio.run(async_checks()) == ((False, True, False), [2, 3])

