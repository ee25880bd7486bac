"""Concurrency on the default local cluster: I/O-bound tasks need more slots than cores,
CPU-bound tasks must still use every core. Measured inside the flow (cluster start excluded),
side by side with raw Dask's default LocalCluster.

    python benchmarks/io_bound.py

Bar: 8 tasks that each sleep 0.5 s finish in <= 1.0 s inside the flow.
"""

from __future__ import annotations

import os
import time

import distributed

from dagrun import flow, task


def nap(_):
    time.sleep(0.5)


def spin(_):
    """About 0.5 s of pure-Python CPU work (holds the GIL)."""
    deadline = time.thread_time() + 0.5
    count = 0
    while time.thread_time() < deadline:
        count += 1
    return count


nap_task, spin_task = task(nap, name="nap"), task(spin, name="spin")


@flow
def timed(kind: str, n: int) -> tuple[float, set[str]]:
    chosen = nap_task if kind == "io" else spin_task
    start = time.perf_counter()
    for future in chosen.map(range(n)):
        future.result()
    return time.perf_counter() - start


def raw_default(kind: str, n: int) -> float:
    with distributed.LocalCluster(host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, distributed.Client(
        cluster
    ) as client:
        client.gather(client.map(nap, range(2), pure=False))  # warm
        start = time.perf_counter()
        client.gather(client.map(nap if kind == "io" else spin, range(n), pure=False))
        return time.perf_counter() - start


def main() -> None:
    import logging

    logging.getLogger("dagrun").setLevel(logging.WARNING)
    cores = len(os.sched_getaffinity(0))
    print(f"{'workload':<36} {'raw Dask default s':>18} {'dagrun s':>9}")
    io_raw, io_dag = raw_default("io", 8), timed("io", 8)
    print(f"{'8 x sleep(0.5)':<36} {io_raw:18.2f} {io_dag:9.2f}   bar: dagrun <= 1.0 s")
    n_cpu = 2 * cores
    cpu_raw, cpu_dag = raw_default("cpu", n_cpu), timed("cpu", n_cpu)
    print(
        f"{f'{n_cpu} x 0.5 s CPU on {cores} cores':<36} {cpu_raw:18.2f} {cpu_dag:9.2f}"
        f"   ideal {n_cpu * 0.5 / cores:.1f} s (every core busy)"
    )


if __name__ == "__main__":
    main()
