"""Driver memory for a 20,000-item map + reduce on the default local cluster: futures and
bookkeeping must be released once nothing can use them. Reports RSS growth of the driver
process (which also hosts the LocalCluster's scheduler), for dagrun and for raw Dask.

    python benchmarks/memory.py [--items 20000]

Each variant runs in its own fresh process, so one cannot inherit the other's heap.

Bar: dagrun's peak growth <= 1.25x raw Dask's (and under 200 MB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import logging

from peak_rss import PeakRSS

from dagrun import flow, task

BAR = 1.25


def inc(x):
    return x + 1


def total(values):
    return sum(values)


inc_task, total_task = task(inc, name="inc"), task(total, name="total")


@flow
def map_reduce(n: int) -> int:
    return total_task(inc_task.map(range(n)))


def raw_map_reduce(n: int) -> int:
    """The same work with raw Dask on an identically configured LocalCluster."""
    import dask
    import distributed

    from dagrun.executors.dask_clusters import default_cluster_size

    workers, threads = default_cluster_size()
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=threads, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )
    with cluster, distributed.Client(cluster) as client:
        return client.submit(total, client.map(inc, range(n), pure=False), pure=False).result()


def measure(variant: str, n: int) -> None:
    logging.getLogger("dagrun").setLevel(logging.WARNING)
    run = map_reduce if variant == "dagrun" else raw_map_reduce
    run(100)  # imports and first-use costs out of the way
    with PeakRSS() as memory:
        result = run(n)
    assert result == sum(range(1, n + 1))
    mb = 1024 * 1024
    print(f"{variant:<8} peak +{(memory.peak - memory.start) / mb:5.1f} MB   after +{(memory.end - memory.start) / mb:5.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--variant", choices=["dagrun", "raw"])
    options = parser.parse_args()
    if options.variant:
        measure(options.variant, options.items)
        return
    print(f"driver RSS growth, map over {options.items:,} items + reduce (bar: dagrun peak <= {BAR}x raw's)")
    peaks = {}
    for variant in ("raw", "dagrun"):
        output = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--items", str(options.items)],
            check=True, capture_output=True, text=True,
        ).stdout
        print(output, end="")
        peaks[variant] = float(output.split("peak +")[1].split("MB")[0])
    ratio = peaks["dagrun"] / peaks["raw"]
    print(f"dagrun / raw peak growth: {ratio:.2f} (bar {BAR}: {'met' if ratio <= BAR else 'NOT met'})")


if __name__ == "__main__":
    main()
