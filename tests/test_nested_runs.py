"""`.submit()` / `.map()` of tasks inside a running task run in that task's process, as in
Prefect 3, on every executor; a worker with one thread does not deadlock on them."""

from __future__ import annotations

import time
from pathlib import Path

from dagrun import flow, task, unmapped
from dagrun.executors import DaskExecutor
from dagrun.futures import FutureList, TaskFuture, allow_failure, as_completed, wait


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def boom() -> None:
    raise ValueError("nested boom")


@task
def note(path: str, text: str, pause: float = 0.0) -> str:
    time.sleep(pause)
    with open(path, "a") as handle:
        handle.write(f"{text}\n")
    return text


@task
def fan_out() -> dict:
    first = add.submit(1, 2)
    mapped = add.map([10, 20, 30], unmapped(first))  # a future passed whole to every call
    done, not_done = wait(mapped)
    completed = sorted(future.result() for future in as_completed(mapped))
    return {
        "types": (type(first).__name__, type(mapped).__name__),
        "values": mapped.result(),
        "each": [future.result() for future in mapped],
        "waited": (len(done), len(not_done)),
        "as_completed": completed,
        "as_value": first + 1,  # a nested future stands in for its value too
        "direct": add(2, 2),  # a direct call inside a task is the value
    }


def test_a_task_submits_and_maps_tasks_of_its_own(executor):
    @flow(executor=executor)
    def pipeline() -> dict:
        return fan_out()

    assert pipeline() == {
        "types": (TaskFuture.__name__, FutureList.__name__),
        "values": [13, 23, 33],
        "each": [13, 23, 33],
        "waited": (3, 0),
        "as_completed": [13, 23, 33],
        "as_value": 4,
        "direct": 4,
    }


@task
def fails_then_uses() -> tuple:
    failed = boom.submit()
    state = failed.wait()
    returned = boom.submit(return_state=True)
    downstream = add.submit(failed, 1)  # an upstream that failed fails its downstream
    return state.name, repr(failed.result(raise_on_failure=False)), returned.name, downstream.wait().name


def test_a_nested_failure_is_the_submitting_tasks_to_handle(executor):
    @flow(executor=executor)
    def pipeline() -> tuple:
        return fails_then_uses()

    assert pipeline() == ("Failed", "ValueError('nested boom')", "Failed", "Failed")


@task
def ordered(path: str) -> list:
    first = note.submit(path, "first", 0.3)
    second = note.submit(path, "second", wait_for=[first])
    return [second.result(), Path(path).read_text().splitlines()]


def test_wait_for_orders_nested_runs(executor, tmp_path):
    @flow(executor=executor)
    def pipeline(path: str) -> list:
        return ordered(path)

    path = tmp_path / "notes.txt"
    assert pipeline(str(path)) == ["second", ["first", "second"]]


@task
def slow_double(x: int) -> int:
    time.sleep(0.2)
    return 2 * x


@task
def maps_and_waits() -> list:
    return slow_double.map(range(6)).result()


def test_nested_runs_do_not_deadlock_a_worker_with_one_thread():
    executor = DaskExecutor(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1})

    @flow(executor=executor)
    def pipeline() -> list:
        return [maps_and_waits.submit(), maps_and_waits.submit()]

    started = time.monotonic()
    assert pipeline() == [[0, 2, 4, 6, 8, 10]] * 2
    assert time.monotonic() - started < 60
