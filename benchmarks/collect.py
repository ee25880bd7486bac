"""Collecting results one by one inside a flow vs raw Dask's single `client.gather`.

    python benchmarks/collect.py [--repeats 5] [--tasks 2000]

On one LocalCluster of 2 worker processes x 1 thread, in one process, the time to collect n
finished results (the tasks are submitted and waited for first; only the collecting is timed):
- raw: `client.gather(futures)`, one gather of n Dask futures;
- dagrun: inside a flow, `[f.result() for f in futures]` over n task futures, the idiom flows
  use. Results are fetched in batches (`dagrun.result_batches`), so this should cost about
  what the one gather does.
Runs alternate (raw, dagrun, raw, ...) so drift in the machine's load falls on both alike; the
medians are compared. Bar: dagrun / raw <= 1.2. The flow's run history is on (the default; a
temporary DAGRUN_HOME).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time

import dask
import distributed

from dagrun import flow, task
from dagrun.executors import DaskExecutor

BAR = 1.2


def inc(x):
    return x + 1


inc_task = task(inc, name="inc")


def raw_collect(client: distributed.Client, n: int) -> tuple[float, list]:
    """(seconds to gather, values) of n finished futures."""
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    distributed.wait(futures)
    start = time.perf_counter()
    values = client.gather(futures)
    return time.perf_counter() - start, values


@flow
def collect_one_by_one(n: int) -> tuple[float, list]:
    """(seconds to collect, values) of n finished task runs, one `.result()` at a time."""
    futures = [inc_task(i) for i in range(n)]
    for future in futures:
        future.wait()
    start = time.perf_counter()
    values = [future.result() for future in futures]
    return time.perf_counter() - start, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2000)
    options = parser.parse_args(argv)
    logging.getLogger("dagrun").setLevel(logging.WARNING)  # no per-run banner lines
    home = tempfile.mkdtemp(prefix="dagrun-bench-")
    os.environ["DAGRUN_HOME"] = home
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )
    client = distributed.Client(cluster)  # the default client, for distributed.wait
    n = options.tasks
    try:
        dagrun_flow = collect_one_by_one.with_options(executor=DaskExecutor(address=cluster.scheduler_address))
        expected = [i + 1 for i in range(n)]
        raw_times, dagrun_times = [], []
        for round_ in range(options.repeats + 1):  # the first round warms both paths up
            for run, times in ((lambda: raw_collect(client, n), raw_times), (lambda: dagrun_flow(n), dagrun_times)):
                seconds, values = run()
                if values != expected:
                    raise SystemExit("a run collected wrong values")
                if round_:
                    times.append(seconds)
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(home, ignore_errors=True)
    raw, dagrun = statistics.median(raw_times), statistics.median(dagrun_times)
    ratio = dagrun / raw
    print(f"{n} results on 2 workers x 1 thread, median of {options.repeats} alternating runs")
    print(f"    raw Dask, one client.gather          {raw:7.3f} s  (all: {', '.join(f'{t:.3f}' for t in raw_times)})")
    print(f"    dagrun, [f.result() for f in ...]    {dagrun:7.3f} s  (all: {', '.join(f'{t:.3f}' for t in dagrun_times)})")
    print(f"    ratio dagrun/raw {ratio:.2f}  (bar <= {BAR}: {'ok' if ratio <= BAR else 'MISSED'})")
    return 0 if ratio <= BAR else 1


if __name__ == "__main__":
    raise SystemExit(main())
