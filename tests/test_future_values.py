"""A future stands in for its value, discarded direct calls are ordered steps, `.map` maps as
Prefect does, `wait` / `as_completed`, and Prefect 3's final states (DESIGN section 2): on the
in-process executor, the thread executor and a real LocalCluster.

Order and overlap are proven by what the tasks record in a file (their own start and end),
never by the test's wall clock.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import dagrun
from dagrun import flow, task, unmapped
from dagrun.executors import DaskExecutor, ThreadExecutor
from dagrun.futures import FutureList, TaskFuture, as_completed, wait
from dagrun.states import Completed, Failed, StateType


def record(path: str, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(f"{text}\n")


def lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).exists() else []


def wait_for_line(path: str, text: str, timeout: float) -> bool:
    """Whether `text` appears in the file within `timeout` seconds (an event between tasks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in lines(path):
            return True
        time.sleep(0.01)
    return False


@task
def add(x, y):
    return x + y


@task
def numbers(n):
    return list(range(n))


@task
def message(name):
    return f"hello {name}"


@task
def record_dict():
    return {"name": "ada", "tags": ["a", "b"]}


@task
def boom(text="boom"):
    raise ValueError(text)


@task
def create_table(log: str) -> None:
    record(log, "create-start")
    # Had the insert started meanwhile, it would show up here: the order would be broken.
    if wait_for_line(log, "insert-start", 0.5):
        record(log, "insert seen while creating")
    record(log, "create-end")


@task
def insert_rows(log: str) -> None:
    record(log, "insert-start")


@task
def failing_step(log: str) -> None:
    record(log, "step ran")
    raise ConnectionError("table locked")


@task
def slow_one(log: str, name: str) -> int:
    record(log, f"{name} start {time.time()!r}")
    time.sleep(1)
    record(log, f"{name} end {time.time()!r}")
    return 1


@task
def describe(value):
    return f"{type(value).__name__}: {value}"


@task
def gated(log: str) -> int:
    opened = wait_for_line(log, "body passed the call", 30)
    record(log, "gate opened")
    return 1 if opened else 0


def concurrent_executor(kind: str, request: pytest.FixtureRequest):
    """An executor whose tasks run while the flow body goes on (the in-process one runs each
    call at once, in the body's thread)."""
    if kind == "threads":
        return ThreadExecutor(max_workers=4)
    return DaskExecutor(address=request.getfixturevalue("local_cluster").scheduler_address)


@flow
def double(number: int) -> int:
    return number * 2


# ---------------------------------------------------------------- values
def test_a_future_used_as_a_value_is_its_result(executor):
    @flow(executor=executor)
    def pipeline():
        ids = numbers(3)
        user = record_dict()
        msg = message("ada")
        seen = []
        for item in ids:  # for
            seen.append(item)
        assert ids and len(ids) == 3 and 2 in ids and ids[-1] == 2 and list(reversed(ids)) == [2, 1, 0]
        assert add(1, 2) == 3 and 3 == add(1, 2) and add(1, 2) != 4
        assert add(1, 2) + 1 == 4 and 10 - add(1, 2) == 7 and -add(1, 2) == -3 and add(1, 2) * add(1, 1) == 6
        assert add(1, 2) < 4 and 4 > add(1, 2) and int(add(1, 2)) == 3 and float(add(1, 2)) == 3.0
        assert ["a", "b", "c", "d"][add(1, 2)] == "d"  # __index__
        assert user["name"] == "ada" and user.get("tags") == ["a", "b"] and "name" in user
        assert msg.upper() == "HELLO ADA" and str(msg) == "hello ada" and f"<{msg}>" == "<hello ada>"
        assert f"{add(1, 2):03d}" == "003"
        print(msg, [add(1, 1), add(2, 2)])
        return seen, repr([add(1, 1), add(2, 2)])

    seen, shown = pipeline()
    assert seen == [0, 1, 2]
    assert shown == "[2, 4]"  # a direct call's future shows as its value, as Prefect's does


def test_futures_keep_identity_hashing_so_they_are_set_members_and_dict_keys(executor):
    @flow(executor=executor)
    def pipeline():
        first, second = add.submit(1, 1), add.submit(1, 1)
        futures = {first, second}
        by_future = {first: "first", second: "second"}
        assert first == first and first == second  # equal values
        return len(futures), by_future[first], repr(first).startswith("TaskFuture('add-0'")

    assert pipeline() == (2, "first", True)


def test_a_failed_task_used_as_a_value_raises_its_exception_in_the_body(executor):
    @flow(executor=executor)
    def pipeline():
        result = boom("bad input")
        try:
            if result:
                return "unreachable"
        except ValueError as error:
            return f"caught {error}"

    assert pipeline() == "caught bad input"


def test_a_future_passed_to_a_subflow_is_its_value(executor):
    @flow(executor=executor)
    def parent():
        return double(add(1, 2))

    assert parent() == 6


@pytest.mark.parametrize("kind", ["threads", "dask"])
def test_passing_a_future_to_a_task_makes_a_dependency_without_waiting(kind, tmp_path, request):
    log = str(tmp_path / "log.txt")

    @flow(executor=concurrent_executor(kind, request))
    def pipeline():
        upstream = gated(log)
        total = add(upstream, 10)  # the driver does not wait here...
        record(log, "body passed the call")  # ...so the upstream, still running, sees this
        return total, type(total) is TaskFuture

    assert pipeline() == (11, True)
    assert lines(log) == ["body passed the call", "gate opened"]


# ---------------------------------------------------------------- steps
def test_discarded_calls_are_steps_in_call_order(executor, tmp_path):
    log = str(tmp_path / "log.txt")

    @flow(executor=executor)
    def pipeline():
        create_table(log)
        insert_rows(log)

    pipeline()
    assert lines(log) == ["create-start", "create-end", "insert-start"]


def test_a_discarded_call_in_a_helper_function_is_a_step_too(executor, tmp_path):
    log = str(tmp_path / "log.txt")

    def prepare():
        create_table(log)

    @flow(executor=executor)
    def pipeline():
        prepare()
        insert_rows.submit(log).result()

    pipeline()
    assert lines(log) == ["create-start", "create-end", "insert-start"]


def test_a_failed_step_raises_at_the_next_task_call_and_later_calls_do_not_run(executor, tmp_path):
    log = str(tmp_path / "log.txt")

    @flow(executor=executor)
    def pipeline():
        failing_step(log)
        try:
            insert_rows(log)
        except ConnectionError as error:
            return f"caught at the next call: {error}", error.__notes__

    caught, notes = pipeline()
    assert caught == "caught at the next call: table locked"
    assert any("failing_step-0" in note for note in notes)
    assert lines(log) == ["step ran"]


def test_a_failed_step_never_looked_at_fails_the_flow_with_its_exception(executor, tmp_path):
    log = str(tmp_path / "log.txt")

    @flow(executor=executor)
    def pipeline():
        failing_step(log)

    with pytest.raises(ConnectionError, match="table locked") as info:
        pipeline()
    assert any("failing_step-0" in note for note in info.value.__notes__)
    state = pipeline(return_state=True)
    assert state.is_failed() and isinstance(state.exception, ConnectionError)


def test_a_kept_direct_call_that_failed_unseen_fails_the_flow_with_the_root_exception(executor):
    @flow(executor=executor)
    def pipeline():
        first = boom("root cause")
        describe(first)  # a step that cannot run: the flow fails with the root's error
        return "body ended"

    @flow(executor=executor)
    def kept_only():
        kept = boom("never looked at")
        return "body ended"

    with pytest.raises(ValueError, match="root cause"):
        pipeline()
    with pytest.raises(ValueError, match="never looked at"):
        kept_only()


@pytest.mark.parametrize("kind", ["threads", "dask"])
def test_two_kept_one_second_calls_overlap_and_add_up(kind, tmp_path, request):
    log = str(tmp_path / "log.txt")

    @flow(executor=concurrent_executor(kind, request))
    def pipeline():
        a = slow_one(log, "a")
        b = slow_one(log, "b")
        return a + b

    assert pipeline() == 2
    times = {" ".join(line.split()[:2]): float(line.split()[2]) for line in lines(log)}
    assert max(times["a start"], times["b start"]) < min(times["a end"], times["b end"])  # they overlapped


def test_submit_and_map_calls_are_never_steps(executor, tmp_path):
    log = str(tmp_path / "log.txt")

    @flow(executor=executor)
    def pipeline():
        boom.submit("ignored")
        boom.map(["also ignored"])
        return add(1, 2)  # not held back, and the failures above never raise here

    assert pipeline() == 3


def test_await_is_not_a_discard_and_a_discarded_call_in_an_async_flow_is_a_step(executor, tmp_path):
    log = str(tmp_path / "log.txt")

    @flow(executor=executor)
    async def pipeline():
        value = await add(1, 2)
        create_table(log)
        insert_rows(log)
        return value

    assert asyncio.run(pipeline()) == 3
    assert lines(log) == ["create-start", "create-end", "insert-start"]


# ---------------------------------------------------------------- map
def test_map_over_a_future_of_a_list_passes_non_iterables_and_strings_whole(executor):
    @flow(executor=executor)
    def pipeline():
        over_future = add.map(numbers(3), 10)
        over_strings = add.map(["a", "b"], "!")
        mixed = add.map([1, 2], add(0, 5))  # a future of a non-iterable: passed whole
        whole = add.map([[1], [2]], unmapped([0]))
        return over_future, over_strings, mixed, whole, isinstance(over_future, FutureList)

    over_future, over_strings, mixed, whole, is_future_list = pipeline()
    assert over_future == [10, 11, 12] and over_strings == ["a!", "b!"] and mixed == [6, 7]
    assert whole == [[1, 0], [2, 0]]
    assert is_future_list


def test_map_returns_a_list_with_result_and_wait(executor):
    @flow(executor=executor)
    def pipeline():
        futures = add.map([1, 2, 3], 1)
        futures.wait()
        return futures.result(), add.map([1], 1).result(timeout=30), len(futures), all(f.done() for f in futures)

    assert pipeline() == ([2, 3, 4], [2], 3, True)


def test_map_without_an_iterable_says_so(executor):
    @flow(executor=executor)
    def pipeline():
        return add.map(1, 2)

    with pytest.raises(ValueError, match=r"add\.map\(\) needs at least one iterable argument"):
        pipeline()


# ---------------------------------------------------------------- wait, as_completed
def test_wait_returns_done_and_not_done(executor):
    @flow(executor=executor)
    def pipeline():
        futures = add.map(range(5), 1) + [boom.submit()]
        done, not_done = wait(futures)
        result = wait(futures, timeout=0)
        return len(done), len(not_done), result.done == done, sorted(f.state.name for f in done)

    count, missing, same, names = pipeline()
    assert (count, missing, same) == (6, 0, True)
    assert names == ["Completed"] * 5 + ["Failed"]  # the failure was looked at: the flow completes


def test_as_completed_yields_every_future_once(executor):
    @flow(executor=executor)
    def pipeline():
        futures = add.map(range(4), 10)
        return sorted(future.result() for future in as_completed(futures + [futures[0]]))

    assert pipeline() == [10, 11, 12, 13]


def test_as_completed_times_out_naming_the_unfinished(tmp_path):
    log = str(tmp_path / "log.txt")

    @flow(executor=ThreadExecutor(max_workers=2))
    def pipeline():
        slow = slow_one.submit(log, "slow")
        with pytest.raises(TimeoutError, match=r"1 \(of 1\) futures unfinished"):
            list(as_completed([slow], timeout=0.05))
        return slow.result()

    assert pipeline() == 1


# ---------------------------------------------------------------- final states
def test_return_state_on_a_task_call_gives_its_final_state(executor):
    @flow(executor=executor)
    def pipeline():
        failed = boom("nope", return_state=True)
        ok = add(1, 2, return_state=True)
        submitted = add.submit(2, 2, return_state=True)
        return failed.is_failed(), str(failed.exception), ok.is_completed(), ok.result(), submitted.result()

    assert pipeline() == (True, "nope", True, 3, 4)
    outside = boom("outside", return_state=True)
    assert outside.is_failed() and str(outside.exception) == "outside"
    assert add(1, 1, return_state=True).result() == 2


def test_allow_failure_runs_the_downstream_with_the_upstream_exception(executor):
    @flow(executor=executor)
    def pipeline():
        failed = boom.submit("upstream broke")
        shown = describe(dagrun.allow_failure(failed))
        after = describe.submit("x", wait_for=[dagrun.allow_failure(failed)])
        return shown, after

    state = pipeline(return_state=True)
    assert state.is_completed()
    assert state.result() == ("ValueError: upstream broke", "str: x")


def test_a_failed_tasks_downstream_is_not_run(executor):
    @flow(executor=executor)
    def pipeline():
        failed = boom.submit()
        downstream = describe.submit(failed)
        return downstream.wait().type, str(downstream.exception())

    kind, error = pipeline()
    assert kind is StateType.NOT_RUN
    assert error == "Task run 'describe-0' did not run because 'boom-0' failed"


def test_a_flow_returning_completed_or_failed_chooses_its_final_state(executor):
    @flow(executor=executor)
    def happy():
        boom.submit().result(raise_on_failure=False)
        return Completed(message="I am happy with this result")

    @flow(executor=executor)
    def unhappy():
        return Failed(message="How did this happen!?")

    state = happy(return_state=True)
    assert state.is_completed() and state.message == "I am happy with this result"
    state = unhappy(return_state=True)
    assert state.is_failed() and state.message == "How did this happen!?"
    with pytest.raises(Exception, match="How did this happen"):
        unhappy()


def test_returning_a_failed_future_fails_the_flow(executor):
    @flow(executor=executor)
    def pipeline():
        return boom.submit("returned"), add.submit(1, 1)

    state = pipeline(return_state=True)
    assert state.is_failed() and isinstance(state.exception, ValueError)
    assert "1/2" in state.message


def test_an_unresolved_failed_submit_completes_the_flow_with_one_warning(executor, run_logs):
    @flow(executor=executor)
    def pipeline():
        boom.submit("first")
        boom.map(["second", "third"])
        return "done"

    state = pipeline(return_state=True)
    assert state.is_completed() and state.result() == "done"
    warnings = [r.getMessage() for r in run_logs if "never resolved" in r.getMessage()]
    assert len(warnings) == 1
    assert "3 failed task run(s) never resolved: 'boom-0', 'boom-1', 'boom-2'" in warnings[0]


def test_a_failure_looked_at_is_the_flows_to_handle(executor):
    @flow(executor=executor)
    def pipeline():
        failed = boom("seen")
        failed.wait()
        if failed.state.is_failed():
            return "handled"

    assert pipeline() == "handled"


@task
def toggle_task(fail: bool):
    if fail:
        return Failed(message="I was instructed to fail.")
    else:
        return Completed(message="I was instructed to succeed.")


def test_a_task_returning_a_failed_state_fails_and_so_does_the_flow_returning_it(executor):
    # Prefect's docs/v3/concepts/states.mdx, "Task return values".
    @flow(executor=executor)
    def example():
        state_one = toggle_task(fail=True)
        state_two = toggle_task(fail=False)
        return state_one, state_two

    state = example(return_state=True)
    assert state.is_failed()
    assert "1/2 returned states did not complete" in state.message
    assert str(state.exception) == "I was instructed to fail."


def test_a_failure_seen_through_return_state_does_not_fail_the_flow(executor):
    # Prefect's docs/snippets/final-flow-state.mdx, with dagrun's imports.
    @flow(executor=executor)
    def my_flow():
        state = add_one_task("1", return_state=True)
        assert state.is_failed()
        ok = add_one_task(1, return_state=True)
        assert ok.is_completed() is True and ok.result() == 2
        return

    assert my_flow(return_state=True).is_completed()


@task
def add_one_task(x):
    return x + 1


@task
def get_customer_ids() -> list[str]:
    return [f"customer{n}" for n in range(10)]


@task
def process_customer(customer_id: str) -> str:
    return f"Processed {customer_id}"


def test_prefects_quickstart_maps_over_a_direct_calls_value(executor):
    # Prefect's docs/v3/get-started/quickstart.mdx (random ids made fixed).
    @flow(executor=executor)
    def main() -> list[str]:
        customer_ids = get_customer_ids()
        results = process_customer.map(customer_ids)
        return results

    assert main() == [f"Processed customer{n}" for n in range(10)]
