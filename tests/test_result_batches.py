"""Results collected one by one are fetched in batches, and cache hits are read by the driver,
on a real LocalCluster: values stay correct and in order, each failure is raised at its own
future, large values still come, values fetched ahead are released with their futures."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import distributed

from dagrun import flow, task, unmapped
from dagrun.context import current_flow_run
from dagrun.result_batches import BATCH_BYTES
from dagrun.results import ResultStore


@task
def double(i: int) -> int:
    return 2 * i


@task
def slow_double(i: int) -> int:
    time.sleep((i * 7 % 5) / 100)  # finish out of submission order
    return 2 * i


@task
def fail_at(i: int, bad: int) -> int:
    if i == bad:
        raise ValueError(f"bad input {i}")
    return i


@task
def blob(i: int, size: int) -> bytes:
    return bytes([i % 256]) * size


def requests_served_to_the_driver(cluster: distributed.LocalCluster) -> int:
    """How many data requests from outside the cluster the workers served since the last call
    (each gather of a batch is one per worker holding part of it); empties their logs."""

    def drain(dask_worker):
        served = [entry["who"] for entry in dask_worker.transfer_outgoing_log]
        dask_worker.transfer_outgoing_log.clear()
        return served

    with distributed.Client(cluster, set_as_default=False) as client:
        workers = set(client.scheduler_info()["workers"])
        return sum(who not in workers for served in client.run(drain).values() for who in served)


def kept_ahead() -> tuple[int, int]:
    """(values, bytes) the running flow's tracker holds fetched ahead of their `.result()`."""
    return current_flow_run().engine.tasks.batches.held()


def test_results_collected_one_by_one_are_correct_in_order_and_fetched_in_batches(dagrun_home, local_cluster, dask_executor):
    @flow(executor=dask_executor)
    def collect(n: int) -> list:
        futures = [double(i) for i in range(n)]
        for future in futures:
            future.wait()
        return [future.result() for future in futures]

    requests_served_to_the_driver(local_cluster)
    assert collect(300) == [2 * i for i in range(300)]
    # One batch: at most one request per worker, where a round trip each would be 300.
    assert requests_served_to_the_driver(local_cluster) <= 2


def test_results_collected_while_their_tasks_still_run_are_correct_and_in_order(dagrun_home, dask_executor):
    @flow(executor=dask_executor)
    def collect(n: int) -> list:
        futures = [slow_double(i) for i in range(n)]
        return [future.result() for future in futures]  # no waiting first: batches form as runs finish

    assert collect(200) == [2 * i for i in range(200)]


def test_a_failed_future_raises_its_own_exception_not_a_neighbours(dagrun_home, dask_executor):
    outcomes: list = []  # the body runs in the driver: it can fill a list of the test's

    @flow(executor=dask_executor)
    def collect() -> None:
        futures = fail_at.map(range(40), bad=unmapped(17))
        for future in futures:
            future.wait()
        for future in futures:
            try:
                outcomes.append(future.result())
            except ValueError as error:
                outcomes.append(str(error))

    collect(return_state=True)  # the flow fails with task 17 (this engine fails a run on any failed task)
    assert outcomes == [i if i != 17 else "bad input 17" for i in range(40)]


def test_results_larger_than_a_batch_are_still_fetched(dagrun_home, dask_executor):
    large = BATCH_BYTES + 1024

    @flow(executor=dask_executor)
    def collect() -> list:
        futures = [blob(i, large if i % 3 == 0 else 1000) for i in range(9)]
        for future in futures:
            future.wait()
        values = [future.result() for future in futures]
        return [(len(value), value[0], value[-1]) for value in values]

    expected = [(large if i % 3 == 0 else 1000, i, i) for i in range(9)]
    assert collect() == expected


def test_a_dropped_futures_value_fetched_ahead_is_released(dagrun_home, dask_executor):
    @flow(executor=dask_executor)
    def collect() -> list:
        first, *others = [blob(i, 10_000) for i in range(20)]
        [future.wait() for future in [first, *others]]  # noqa: no loop variable left holding one
        assert first.result() == bytes([0]) * 10_000
        held_before = kept_ahead()
        assert others[0].result() == bytes([1]) * 10_000  # handed over once, then not held
        held_after_one = kept_ahead()
        del others
        gc.collect()
        return [held_before, held_after_one, kept_ahead()]

    before, after_one, after_drop = collect()
    assert before[0] == 19 and before[1] >= 19 * 10_000
    assert after_one[0] == 18
    assert after_drop == (0, 0)


@task(cache=True)
def cached_blob(i: int, size: int, log: str) -> bytes:
    with open(log, "a") as handle:
        handle.write(f"{i}\n")
    return i.to_bytes(4, "little") * (size // 4)


@task(cache=True)
def cached_total(chunks: list) -> int:
    return sum(int.from_bytes(chunk[:4], "little") for chunk in chunks)


def load_keys(cluster: distributed.LocalCluster) -> set[str]:
    """Keys of the Dask tasks that loaded a cache hit, among the scheduler's recent transitions."""
    with distributed.Client(cluster, set_as_default=False) as client:
        return set(client.run_on_scheduler(
            lambda dask_scheduler: [str(entry[0]) for entry in dask_scheduler.transition_log if str(entry[0]).startswith("load-")]
        ))


def blobs(n: int, size: int) -> list[bytes]:
    return [i.to_bytes(4, "little") * (size // 4) for i in range(n)]


def test_cached_values_are_correct_in_every_shape_and_hits_run_no_dask_task(dagrun_home, local_cluster, dask_executor, calls):
    size, log = 50_000, str(calls.path)

    @flow(executor=dask_executor)
    def one_by_one(n: int) -> list:
        return [future.result() for future in cached_blob.map(range(n), size=unmapped(size), log=unmapped(log))]

    @flow(executor=dask_executor)
    def returned(n: int) -> list:
        return cached_blob.map(range(n), size=unmapped(size), log=unmapped(log))

    @flow(executor=dask_executor)
    def reduced(n: int) -> int:
        return cached_total(cached_blob.map(range(n), size=unmapped(size), log=unmapped(log)))

    assert one_by_one(120) == blobs(120, size)
    assert len(calls.lines()) == 120
    assert reduced(120) == sum(range(120))  # its reduce task ran: the hits were loaded for it
    loaded = load_keys(local_cluster)
    assert one_by_one(120) == blobs(120, size)
    assert returned(120) == blobs(120, size)
    assert reduced(120) == sum(range(120))
    assert len(calls.lines()) == 120  # every rerun came from the cache
    # A hit's value the flow asks for is read by the driver, not loaded by a Dask task per hit.
    assert load_keys(local_cluster) - loaded == set()


def test_a_corrupted_cache_entry_is_recomputed_never_returned(dagrun_home, dask_executor, calls):
    size, log = 20_000, str(calls.path)

    @flow(executor=dask_executor)
    def one_by_one(n: int) -> list:
        return [future.result() for future in cached_blob.map(range(n), size=unmapped(size), log=unmapped(log))]

    assert one_by_one(30) == blobs(30, size)
    store = ResultStore.from_env()
    entry_of = {int.from_bytes(store.get(info.key)[:4], "little"): info for info in store.entries("cached_blob")}
    assert sorted(entry_of) == list(range(30))
    for i in 4, 5:  # neighbours: one batch reads both
        path = Path(entry_of[i].path)
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF  # the payload changes, the header does not: the planner sees a hit
        path.write_bytes(bytes(data))
    calls.path.write_text("")
    assert one_by_one(30) == blobs(30, size)
    assert sorted(calls.lines()) == ["4", "5"]  # only the corrupted entries ran again
    assert one_by_one(30) == blobs(30, size)
    assert sorted(calls.lines()) == ["4", "5"]
