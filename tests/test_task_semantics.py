"""Tasks and flows behave as DESIGN section 2 says, on the in-process executor and on Dask."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest

from dagrun import State, TaskFuture, flow, task, unmapped
from dagrun.errors import ParameterValidationError, UpstreamFailedError
from dagrun.executors import InProcessExecutor
from dagrun.executors import DaskExecutor


def record(path: str, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(f"{text}\n")


def lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).exists() else []


@task
def add(x, y):
    """Add two numbers."""
    return x + y


@task
def total(values):
    return sum(values)


@task
def boom(message="boom"):
    raise ValueError(message)


def test_decorated_task_keeps_signature_name_doc_and_fn():
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert list(inspect.signature(add).parameters) == ["x", "y"]
    assert add.fn(1, 2) == 3
    assert add.name == "add"


def test_task_called_outside_a_flow_runs_in_process_and_returns_the_value():
    assert add(2, 3) == 5


def test_cached_task_called_outside_a_flow_reuses_its_entry_and_a_flow_run_shares_it(calls):
    @task(cache=True)
    def double(x):
        calls.record(f"double {x}")
        return 2 * x

    @flow(executor=InProcessExecutor())
    def pipeline(x: int):
        return double(x)

    assert [double(1), double(1), double(2)] == [2, 2, 4]
    assert pipeline(2) == 4  # the same key inside a flow: the entry written outside is reused
    assert calls.lines() == ["double 1", "double 2"]


def test_task_call_inside_flow_returns_a_future_and_flow_returns_values(executor):
    seen = {}

    @flow(executor=executor)
    def pipeline():
        future = add(1, 2)
        seen["future"] = isinstance(future, TaskFuture)
        return {"sum": future, "list": [add(future, 1), (add(2, 2),)]}

    assert pipeline() == {"sum": 3, "list": [4, (4,)]}
    assert seen["future"] is True


def test_futures_nested_in_containers_become_dependencies(executor):
    @task
    def describe(items, mapping, members):
        return sorted(items), mapping["k"], sorted(members)

    @flow(executor=executor)
    def pipeline():
        a, b = add(1, 1), add(2, 2)
        return describe([a, b], {"k": (a, b)}, {a, b})

    assert pipeline() == ([2, 4], (2, 4), [2, 4])


def test_submit_map_unmapped_and_wait_for(executor, tmp_path):
    log = str(tmp_path / "order.log")

    @task
    def write(text, path):
        time.sleep(0.2)
        record(path, text)

    @task
    def after(path):
        return lines(path)

    @flow(executor=executor)
    def pipeline():
        mapped = add.map([1, 2, 3], unmapped(10))
        first = write.submit("first", log)
        seen = after.submit(log, wait_for=[first])
        return mapped, seen

    mapped, seen = pipeline()
    assert mapped == [11, 12, 13]
    assert seen == ["first"]


def test_map_rejects_iterables_of_different_length(executor):
    @flow(executor=executor)
    def pipeline():
        return add.map([1, 2], [1])

    with pytest.raises(ValueError, match="differ in length"):
        pipeline()


def test_submit_outside_a_flow_says_how_to_call_instead():
    with pytest.raises(Exception, match=r"needs a running flow.*add\(\.\.\.\) directly"):
        add.submit(1, 2)


@pytest.mark.parametrize(
    "use, expected",
    [(bool, True), (lambda f: f + 1, 4), (lambda f: 1 + f, 4), (lambda f: f < 1, False), (lambda f: f == 3, True),
     (int, 3), (float, 3.0), (str, "3"), (lambda f: f"{f:>3}", "  3")],
    ids=["bool", "add", "radd", "lt", "eq", "int", "float", "str", "format"],
)
def test_future_used_as_value_is_its_result(executor, use, expected):
    @flow(executor=executor)
    def pipeline():
        return use(add(1, 2))

    assert pipeline() == expected


def test_future_api_result_wait_state_done_exception(executor):
    @flow(executor=executor)
    def pipeline():
        good, bad = add(1, 2), boom()
        assert good.result(timeout=30) == 3
        state = good.wait()
        assert state.is_completed() and state.name == "Completed"
        assert good.done() and good.state.is_completed()
        assert isinstance(bad.exception(), ValueError)
        assert bad.state.is_failed()
        assert isinstance(bad.result(raise_on_failure=False), ValueError)
        return "checked"

    state = pipeline(return_state=True)
    # The body looked at the failure (.exception(), .state, raise_on_failure=False): it is
    # the flow's to handle, and the run completes (Prefect 3, DESIGN section 2).
    assert state.name == "Completed"
    assert state.result() == "checked"


def test_failure_propagation_not_run_downstream_independent_branch_finishes(executor, tmp_path):
    log = str(tmp_path / "calls.log")
    futures = {}

    @task
    def slow_independent(path):
        time.sleep(0.3)
        record(path, "independent")
        return "kept"

    @task
    def downstream(value, path):
        record(path, "downstream")
        return value

    @flow(executor=executor)
    def pipeline():
        failed = boom("extract broke")
        futures["child"] = downstream(failed, log)
        futures["grandchild"] = downstream(futures["child"], log)
        futures["independent"] = slow_independent(log)

    with pytest.raises(ValueError, match="extract broke") as info:
        pipeline()
    assert any("boom-0" in note for note in info.value.__notes__)
    assert lines(log) == ["independent"]
    assert futures["independent"].state.name == "Completed"
    child, grandchild = futures["child"].state, futures["grandchild"].state
    assert child.name == grandchild.name == "NotRun"
    assert "'boom-0' failed" in child.message
    assert "'downstream-0' <- 'boom-0'" in grandchild.message
    with pytest.raises(UpstreamFailedError):
        futures["grandchild"].result()


def test_flow_waits_for_dropped_futures(executor, tmp_path):
    log = str(tmp_path / "calls.log")

    @task
    def side_effect(path, text):
        time.sleep(0.2)
        record(path, text)

    @flow(executor=executor)
    def pipeline():
        for i in range(4):
            side_effect(log, f"done-{i}")  # futures dropped on purpose

    pipeline()
    assert sorted(lines(log)) == [f"done-{i}" for i in range(4)]


def test_return_state_gives_the_final_state_instead_of_raising(executor):
    @flow(executor=executor)
    def failing():
        boom("nope")

    state = failing(return_state=True)
    assert isinstance(state, State)
    assert state.is_failed() and not state.is_completed()
    assert "nope" in state.message
    assert state.start_time is not None and state.end_time >= state.start_time

    @flow(executor=executor)
    def fine():
        return add(1, 1)

    good = fine(return_state=True)
    assert good.is_completed() and good.result() == 2


def test_subflow_shares_the_parent_executor_and_returns_values(executor):
    @task
    def where() -> tuple[int, str | None]:
        """The process a task ran in, and the scheduler of its Dask worker (None outside Dask)."""
        try:
            return os.getpid(), distributed.get_worker().scheduler.address
        except ValueError:
            return os.getpid(), None

    @flow  # no executor of its own: it must run on its parent's
    def child(x: int):
        return add(x, 1), where()

    @flow(executor=executor)
    def parent():
        inner, child_ran = child(1)
        return add(inner, 10), child_ran, where()

    total, (child_pid, child_scheduler), (parent_pid, parent_scheduler) = parent()
    assert total == 12
    if isinstance(executor, DaskExecutor):
        assert parent_scheduler == executor.address
        assert child_scheduler == executor.address  # the parent's scheduler, not a cluster of its own
        assert child_pid != os.getpid()
    else:
        assert (child_pid, child_scheduler) == (parent_pid, parent_scheduler) == (os.getpid(), None)


def test_dynamic_flow_branches_on_results(executor):
    @flow(executor=executor)
    def countdown(n: int):
        steps = 0
        while n > 0:
            n = add(n, -1).result()
            steps += 1
        return steps

    assert countdown(5) == 5


def test_parameters_are_validated_and_coerced_before_any_task_runs(executor, tmp_path):
    log = str(tmp_path / "calls.log")

    @task
    def touch(path, value):
        record(path, repr(value))

    @flow(executor=executor)
    def typed(count: int, ratio: float = 0.5, names: list[str] = ()):
        touch(log, (count, ratio, tuple(names)))

    typed("3", names=["a"])
    assert lines(log) == ["(3, 0.5, ('a',))"]
    with pytest.raises(ParameterValidationError, match=r"parameter 'count' expected int, got 'many'"):
        typed("many")
    with pytest.raises(ParameterValidationError, match="unexpected keyword|got an unexpected"):
        typed(1, colour="red")
    assert lines(log) == ["(3, 0.5, ('a',))"]  # no task ran for the bad calls


def test_unserializable_return_value_fails_naming_its_type_without_retry(executor, tmp_path):
    log = str(tmp_path / "calls.log")

    @task(retries=2)
    def make_generator(path):
        record(path, "attempt")
        return (i for i in range(3))

    @flow(executor=executor)
    def pipeline():
        return make_generator(log)

    with pytest.raises(TypeError, match="returned a value of type 'builtins.generator' that cannot be serialized"):
        pipeline()
    assert lines(log) == ["attempt"]


@pytest.fixture
def two_worker_cluster() -> Iterator[distributed.SpecCluster]:
    """A scheduler and two worker processes, one with resource `producer`, one with `consumer`,
    so a task can be placed on either and a value must travel between them."""
    def worker(resource: str) -> dict:
        return {"cls": distributed.Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "resources": {resource: 1}}}

    scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}
    with distributed.SpecCluster(
        scheduler=scheduler, workers={"producer": worker("producer"), "consumer": worker("consumer")}
    ) as cluster:
        yield cluster


def test_values_move_worker_to_worker_not_through_the_driver(two_worker_cluster, tmp_path):
    unpickled_in = tmp_path / "unpickled.log"

    @task(resources={"producer": 1})
    def produce(path):
        return Tracked(path)

    @task(resources={"consumer": 1})
    def consume(tracked):
        return type(tracked).__name__, tracked.pid_created, os.getpid()

    @flow(executor=DaskExecutor(address=two_worker_cluster.scheduler_address))
    def pipeline():
        return [consume(produce(str(unpickled_in))) for _ in range(4)]

    results = pipeline()
    assert [name for name, _, _ in results] == ["Tracked"] * 4
    (producer_pid,), (consumer_pid,) = {made for _, made, _ in results}, {used for _, _, used in results}
    assert len({producer_pid, consumer_pid, os.getpid()}) == 3  # two workers, neither the driver
    assert set(lines(str(unpickled_in))) == {str(consumer_pid)}  # the driver never unpickled a value


class Tracked:
    """Records, in a file, the pid of every process that unpickles it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid_created = os.getpid()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        record(self.path, str(os.getpid()))


def test_independent_tasks_overlap_in_time_on_dask(dask_executor):
    @task
    def nap():
        start = time.time()
        time.sleep(0.5)
        return start, time.time()

    @flow(executor=dask_executor)
    def pipeline():
        return [nap() for _ in range(4)]

    windows = pipeline()
    latest_start = max(start for start, _ in windows)
    earliest_end = min(end for _, end in windows)
    assert latest_start < earliest_end  # all four were running at the same moment
