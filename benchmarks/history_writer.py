"""How much the run history costs the engine's hot path, and how fast it drains.

The engine submits a `TaskRunState` for every state change of every task (2,000+ a second
in a large fan-out), so `HistoryWriter.submit` must cost microseconds; the writer thread
then has to write them faster than they arrive. This times, on a real SQLite file:

  build    constructing the 20,000 frozen event records (the engine pays this too)
  submit   `writer.submit(event)` for each of them (the hot-path cost)
  flush    `writer.flush()` until all of them are committed (off the hot path)

    python benchmarks/history_writer.py [--events 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dagrun.history import (
    FlowRunStarted,
    HistoryStore,
    HistoryWriter,
    TaskRunCreated,
    TaskRunState,
)


def run_once(directory: Path, events: int) -> dict[str, float]:
    store = HistoryStore(directory / "dagrun.db")
    writer = HistoryWriter(store)
    now = time.time()
    flow_run_id = f"bench-{time.monotonic_ns()}"
    writer.submit(
        FlowRunStarted(flow_run_id, "bench", "bench-1", {}, now, None, None, "local", None,
                       "localhost", 1)
    )
    for n in range(events):
        writer.submit(TaskRunCreated(f"{flow_run_id}-{n}", flow_run_id, "work", f"work-{n}",
                                     (), None, now))
    writer.flush()  # the task runs exist, so the timed updates below touch real rows

    start = time.perf_counter()
    states = [
        TaskRunState(f"{flow_run_id}-{n}", "Completed", now, attempt=1, worker="tcp://w:1")
        for n in range(events)
    ]
    built = time.perf_counter()
    submit = writer.submit
    for event in states:
        submit(event)
    submitted = time.perf_counter()
    writer.flush()
    flushed = time.perf_counter()
    writer.close()
    store.close()
    return {
        "build_us": (built - start) / events * 1e6,
        "submit_us": (submitted - built) / events * 1e6,
        "flush_s": flushed - submitted,
        "write_rate": events / (flushed - submitted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        results = [run_once(Path(directory), arguments.events) for _ in range(arguments.repeat)]
    print(f"{arguments.events} TaskRunState events, best of {arguments.repeat}:")
    print(f"  build   {min(r['build_us'] for r in results):8.2f} us/event")
    print(f"  submit  {min(r['submit_us'] for r in results):8.2f} us/event   (engine hot path)")
    print(f"  flush   {min(r['flush_s'] for r in results):8.3f} s        "
          f"({max(r['write_rate'] for r in results):,.0f} events/s written)")


if __name__ == "__main__":
    main()
