"""Per-task overhead: dagrun flows vs raw `client.submit`, on one LocalCluster, in one process.

Scenarios: 2,000 independent trivial tasks; a chain of 300 dependent tasks; a map over 2,000
items plus one reduce. Each is measured for raw Dask and for dagrun (best of N repeats, raw
and dagrun runs alternating) on the same cluster, and the ratio dagrun / raw is printed. Run
for both scheduler settings: worker-saturation=inf (dagrun's default local cluster) and
Dask's default (1.1). dagrun runs with its run history on (the default; a temporary
DAGRUN_HOME), and two last rows compare the 2,000-task fan-out with history on vs off (bar:
history adds <= 10%): at least 15 runs each, alternating, best and median.

    python benchmarks/overhead.py [--repeats 3] [--saturation inf|1.1|both]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import dask
import distributed

from dagrun import flow, task
from dagrun.executors import DaskExecutor


def inc(x):
    return x + 1


def total(values):
    return sum(values)


inc_task = task(inc, name="inc")
total_task = task(total, name="total")


def raw_independent(client, n):
    return client.gather([client.submit(inc, i, pure=False) for i in range(n)])


def raw_chain(client, n):
    future = client.submit(inc, 0, pure=False)
    for _ in range(n - 1):
        future = client.submit(inc, future, pure=False)
    return future.result()


def raw_map_reduce(client, n):
    futures = client.map(inc, range(n), pure=False)
    return client.submit(total, futures, pure=False).result()


@flow
def dagrun_independent(n: int):
    return [inc_task(i) for i in range(n)]


@flow
def dagrun_chain(n: int):
    future = inc_task(0)
    for _ in range(n - 1):
        future = inc_task(future)
    return future


@flow
def dagrun_map_reduce(n: int):
    return total_task(inc_task.map(range(n)))


SCENARIOS = [
    ("2,000 independent tasks", raw_independent, dagrun_independent, 2000),
    ("chain of 300 tasks", raw_chain, dagrun_chain, 300),
    ("map 2,000 + reduce", raw_map_reduce, dagrun_map_reduce, 2000),
]


def alternating(repeats: int, *fns) -> list[list[float]]:
    """Each function's times over `repeats` rounds that run them in turn, so that drift in the
    machine's load (other processes, the cluster warming up) falls on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, measured in zip(fns, times):
            start = time.perf_counter()
            fn()
            measured.append(time.perf_counter() - start)
    return times


def without_history(fn):
    def run():
        os.environ["DAGRUN_HISTORY"] = "off"
        try:
            fn()
        finally:
            del os.environ["DAGRUN_HISTORY"]

    return run


def measure(saturation: float, repeats: int) -> list[tuple[str, float, float]]:
    with dask.config.set({"distributed.scheduler.worker-saturation": saturation}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=4, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )
    client = distributed.Client(cluster)
    executor = DaskExecutor(address=cluster.scheduler_address)
    rows = []
    try:
        for label, raw, dagrun_flow, n in SCENARIOS:
            flow_with_cluster = dagrun_flow.with_options(executor=executor)
            raw(client, n), flow_with_cluster(n)  # warm up both paths
            raw_times, dag_times = alternating(repeats, lambda: raw(client, n), lambda: flow_with_cluster(n))
            rows.append((label, min(raw_times), min(dag_times)))
        independent = dagrun_independent.with_options(executor=executor)
        on, off = alternating(
            max(repeats, 15), lambda: independent(2000), without_history(lambda: independent(2000))
        )
        rows.append(("2,000 tasks: history, best", min(off), min(on)))
        # Run times here have long tails both ways (2.2-3.1 s for the same run): the median of
        # alternating runs is the steadier measure of what history costs.
        rows.append(("2,000 tasks: history, median", statistics.median(off), statistics.median(on)))
    finally:
        client.close()
        cluster.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--saturation", choices=["inf", "1.1", "both"], default="both")
    options = parser.parse_args()
    settings = {"inf": [float("inf")], "1.1": [1.1], "both": [float("inf"), 1.1]}[options.saturation]
    import logging

    logging.getLogger("dagrun").setLevel(logging.WARNING)  # no per-run banner lines in the table
    os.environ["DAGRUN_HOME"] = tempfile.mkdtemp(prefix="dagrun-bench-")
    print(f"{'scenario':<28} {'saturation':>10} {'raw s':>8} {'dagrun s':>9} {'ratio':>6}")
    print(f"{'':<28} {'':>10} {'(off)':>8} {'(on)':>9}   <- history rows: off vs on")
    for saturation in settings:
        for label, raw_time, dag_time in measure(saturation, options.repeats):
            print(f"{label:<28} {saturation:>10} {raw_time:8.3f} {dag_time:9.3f} {dag_time / raw_time:6.2f}")
    shutil.rmtree(os.environ["DAGRUN_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
