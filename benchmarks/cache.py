"""Cross-run caching on Dask: a cached rerun against the first run, and what reaches the driver.

    python benchmarks/cache.py [--tasks 500] [--repeats 3] [--work sleep|busy] [--kib 100] [--store-mib 256]

The numbers go to stdout; the runs' own log lines (a "Cached ..." line per hit, printed within
the timed runs as a user would see them) go to stderr: add 2>/dev/null to see only the numbers.

(a) A flow of 500 cached tasks, each doing 20 ms of work (`time.sleep(0.02)` by default, so the
    number measures dagrun and Dask rather than how many cores the machine has; `--work busy`
    spins the CPU instead), `chunk` tasks returning 100 KiB each, in three shapes:
      returned   the flow returns the 500 futures (their values reach the caller);
      reduced    499 chunks and one `combine` task over all of them, whose small summary the
                 flow returns;
      collected  the flow collects `[f.result() for f in futures]` one by one, returns a summary.
    All runs use one default-shaped local cluster (a process per core, 4 threads each,
    worker-saturation inf), started and warmed up before timing. Per shape and repeat: the
    warm first run on an empty store, then the fully cached rerun; medians over `--repeats`.
    Bar: rerun / first <= 0.1 in every shape. For reference, the reduced pair end to end,
    each run starting its own cluster.
(b) Result bytes moved to the driver in the reduced shape's cached rerun, from Dask's own counters: every
    worker logs each `get_data` it serves (bytes, and who asked: a peer worker's address, or
    None when the scheduler gathers for a client). Bytes served to non-workers are what the
    driver received. Bar: only what the flow returns (its `dask.sizeof`).
(c) `benchmarks/cache_store.py`, the store against plain numpy.save/numpy.load of a 256 MiB
    array, run as a subprocess; its ratios are repeated in the summary. Bar: <= 1.5.

Every ratio printed comes from this one invocation.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import distributed
from dask.sizeof import sizeof

from dagrun import flow, task, unmapped
from dagrun.executors import DaskExecutor
from dagrun.executors.dask_clusters import default_cluster_size

RERUN_BAR = 0.1
STORE_BAR = 1.5
WORK_SECONDS = 0.02


def work(mode: str) -> None:
    if mode == "sleep":
        time.sleep(WORK_SECONDS)
        return
    end = time.perf_counter() + WORK_SECONDS
    while time.perf_counter() < end:
        pass


@task(cache=True)
def chunk(index: int, kib: int, mode: str) -> bytes:
    work(mode)
    return index.to_bytes(4, "little") * (kib * 256)


@task(cache=True)
def combine(chunks: list, mode: str) -> dict:
    work(mode)
    return {"chunks": len(chunks), "bytes": sum(map(len, chunks)), "first": chunks[0][:4].hex()}


def chunked(tasks: int, kib: int, mode: str) -> dict:
    chunks = chunk.map(range(tasks - 1), kib=unmapped(kib), mode=unmapped(mode))
    return combine(chunks, mode)


def returned(tasks: int, kib: int, mode: str) -> list:
    return chunk.map(range(tasks), kib=unmapped(kib), mode=unmapped(mode))


def collected(tasks: int, kib: int, mode: str) -> dict:
    values = [future.result() for future in chunk.map(range(tasks), kib=unmapped(kib), mode=unmapped(mode))]
    return {"chunks": len(values), "bytes": sum(map(len, values)), "first": values[0][:4].hex()}


SHAPES = {"returned": returned, "reduced": chunked, "collected": collected}


def served(client: distributed.Client) -> tuple[int, int, list[str]]:
    """(bytes served to the driver, bytes served between workers, keys served to the driver)
    since the last call, from the workers' transfer logs (which this call empties)."""

    def drain(dask_worker):
        entries = [(entry["who"], entry["total"], list(entry["keys"])) for entry in dask_worker.transfer_outgoing_log]
        dask_worker.transfer_outgoing_log.clear()
        return entries

    workers = set(client.scheduler_info()["workers"])
    to_driver = between_workers = 0
    keys: list[str] = []
    for entries in client.run(drain).values():
        for who, total, served_keys in entries:
            if who in workers:
                between_workers += total
            else:
                to_driver += total
                keys += [str(key) for key in served_keys]
    return to_driver, between_workers, keys


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    value = run()
    return time.perf_counter() - start, value


def rerun_benchmark(options: argparse.Namespace) -> tuple[dict[str, float], int, int]:
    """Per shape: (median first run, median cached rerun); and (b) for the reduced shape."""
    workers, threads = default_cluster_size()
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
    executor = DaskExecutor(address=cluster.scheduler_address)
    args = (options.tasks, options.kib, options.work)
    times: dict[str, tuple[list[float], list[float]]] = {shape: ([], []) for shape in SHAPES}
    try:
        with distributed.Client(cluster, set_as_default=False) as client, \
                tempfile.TemporaryDirectory(prefix="dagrun-bench-stores-") as stores:
            warm = flow(name="cache_benchmark_warm_up", executor=executor, result_storage=f"{stores}/warm")(returned)
            warm(40, 1, options.work)  # workers have imported dagrun and run tasks before timing
            for repeat in range(options.repeats):
                for shape, body in SHAPES.items():
                    storage = f"{stores}/{shape}-{repeat}"  # an empty store for each first run
                    pipeline = flow(name=f"cache_benchmark_{shape}", executor=executor, result_storage=storage)(body)
                    served(client)
                    first, first_value = timed(lambda: pipeline(*args))
                    first_driver, first_peers, _ = served(client)
                    rerun, value = timed(lambda: pipeline(*args))
                    driver_bytes, peer_bytes, driver_keys = served(client)
                    if value != first_value:
                        raise SystemExit(f"{shape}: the cached rerun returned another value than the first run")
                    times[shape][0].append(first)
                    times[shape][1].append(rerun)
                    if shape == "reduced":
                        reduced = (value, first_driver, first_peers, driver_bytes, peer_bytes, driver_keys)
    finally:
        cluster.close()
    print(f"(a) {options.tasks} cached tasks x {WORK_SECONDS * 1000:.0f} ms ({options.work}), "
          f"{options.kib} KiB each, on {workers} workers x {threads} threads (warm), "
          f"medians of {options.repeats}")
    ratios = {}
    for shape, (firsts, reruns) in times.items():
        first, rerun = statistics.median(firsts), statistics.median(reruns)
        ratios[shape] = rerun / first
        print(f"    {shape:<10} first run {first:7.3f} s   cached rerun {rerun:7.3f} s   ratio {ratios[shape]:.3f}"
              f"  (bar <= {RERUN_BAR}: {'ok' if ratios[shape] <= RERUN_BAR else 'MISSED'})")
    value, first_driver, first_peers, driver_bytes, peer_bytes, driver_keys = reduced
    returned_bytes = sizeof(value)
    print(f"(b) the reduced flow returns {value!r}: {returned_bytes} bytes by dask.sizeof")
    print(f"    first run:    {first_driver} bytes to the driver, {first_peers} between workers")
    print(f"    cached rerun: {driver_bytes} bytes to the driver (keys: {', '.join(driver_keys) or 'none'}), "
          f"{peer_bytes} between workers; the {options.tasks} results hold "
          f"{(options.tasks - 1) * options.kib * 1024 + returned_bytes} bytes")
    only_returned = driver_bytes <= returned_bytes
    print(f"    result bytes moved to the driver in the cached rerun: {driver_bytes} "
          f"(bar: only what the flow returns, {returned_bytes}: {'ok' if only_returned else 'MISSED'})")
    return ratios, driver_bytes, returned_bytes


def end_to_end(options: argparse.Namespace) -> None:
    """The reduced pair of runs, each starting (and closing) its own default local cluster."""
    with tempfile.TemporaryDirectory(prefix="dagrun-bench-results-") as results:
        pipeline = flow(name="cache_benchmark_e2e", result_storage=results, executor=DaskExecutor())(chunked)
        args = (options.tasks, options.kib, options.work)
        first, _ = timed(lambda: pipeline(*args))
        rerun, _ = timed(lambda: pipeline(*args))
    print(f"    for reference, end to end with a cluster start per run: first {first:.3f} s, "
          f"cached rerun {rerun:.3f} s, ratio {rerun / first:.3f}")


def store_benchmark(options: argparse.Namespace) -> tuple[list[tuple[str, float]], bool]:
    script = Path(__file__).with_name("cache_store.py")
    print(f"(c) {script.name} --mib {options.store_mib} (store put + get-and-verify vs numpy.save+fsync + numpy.load)")
    result = subprocess.run(
        [sys.executable, str(script), "--mib", str(options.store_mib)], capture_output=True, text=True,
        check=False,  # a missed bar exits 1; its output is still wanted
    )
    print(textwrap_indent(result.stdout + result.stderr))
    ratios = [(mode, float(total)) for mode, total in re.findall(
        r"\[(\w+)\] ratio store/plain:.*total\s+([\d.]+)", result.stdout
    )]
    if not ratios:
        print("    could not read a ratio from its output")
    return ratios, bool(ratios) and all(ratio <= STORE_BAR for _, ratio in ratios)


def textwrap_indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.rstrip().splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="first run + rerun pairs per shape")
    parser.add_argument("--kib", type=int, default=100, help="size of each chunk task's result")
    parser.add_argument("--work", choices=["sleep", "busy"], default="sleep")
    parser.add_argument("--store-mib", type=int, default=256)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the reference runs with a cluster each")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dagrun-bench-home-") as home:
        os.environ["DAGRUN_HOME"] = home  # an empty store and history; workers inherit it
        os.environ.pop("DAGRUN_RESULTS", None)
        print(f"{os.cpu_count()} cpus, python {sys.version.split()[0]}, distributed {distributed.__version__}")
        ratios, driver_bytes, returned = rerun_benchmark(options)
        if not options.no_end_to_end:
            end_to_end(options)
    store_ratios, store_ok = store_benchmark(options)
    print("summary (this invocation):")
    for shape, ratio in ratios.items():
        print(f"    (a) {shape}: cached rerun / warm first run: {ratio:.3f}  (bar <= {RERUN_BAR})")
    print(f"    (b) result bytes moved to the driver in the cached rerun: {driver_bytes}; the flow returns "
          f"{returned}  (bar: only what the flow returns)")
    for mode, value in store_ratios:
        print(f"    (c) store / plain numpy, {mode} read: {value:.2f}  (bar <= {STORE_BAR})")
    reruns_ok = all(ratio <= RERUN_BAR for ratio in ratios.values())
    return 0 if reruns_ok and driver_bytes <= returned and store_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
