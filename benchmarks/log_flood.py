"""A chatty task must not take the driver down: a task on a worker process of the default local
cluster prints 100 MB of lines with `log_prints=True`. Reports the driver's RSS growth (the
driver also hosts the cluster's scheduler), the run-history database's growth and the bytes
written to the terminal, next to what the task produced (what an uncapped run would have to
carry and store).

    python benchmarks/log_flood.py [--lines 1000000] [--line-bytes 100]

Uses a fresh DAGRUN_HOME (a temporary directory) and the cap from DAGRUN_LOG_CAP_BYTES
(default 10 MB). Aims: driver RSS growth <= 150 MB; database growth <= the cap + 10%.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from peak_rss import PeakRSS

MB = 1_000_000


class CountingStream:
    """Stands in for the terminal: counts what the driver writes to stderr, keeps none of it."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode("utf-8", "replace"))
        self.lines += text.count("\n")
        return len(text)

    def flush(self) -> None:
        pass


def database_bytes(home: Path) -> int:
    """The history database's size once its write-ahead log is folded in."""
    path = home / "dagrun.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in home.glob("dagrun.db*"))


def stored_logs(home: Path, flow_run_id: str) -> tuple[int, int, list[str]]:
    """Rows and message bytes stored for the run, and its "dropped" lines."""
    with sqlite3.connect(home / "dagrun.db") as connection:
        rows, size = connection.execute(
            "SELECT count(*), coalesce(sum(length(CAST(message AS BLOB))), 0) FROM logs WHERE flow_run_id = ?",
            (flow_run_id,),
        ).fetchone()
        markers = [m for (m,) in connection.execute(
            "SELECT message FROM logs WHERE flow_run_id = ? AND message LIKE '... % dropped%'", (flow_run_id,)
        )]
    return rows, size, markers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--line-bytes", type=int, default=100, help="bytes per printed line, newline included")
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dagrun-log-flood-"))
    os.environ["DAGRUN_HOME"] = str(home)
    os.environ.setdefault("DAGRUN_PROGRESS", "off")

    from dagrun import flow, task
    from dagrun.log_cap import log_cap_bytes

    lines, width = options.lines, options.line_bytes - 1  # print adds the newline

    @task(log_prints=True)
    def chatty(n: int, width: int) -> str:
        import os as worker_os

        filler = "x" * width
        for i in range(n):
            print(f"{i:09d} {filler}"[:width])
        return f"pid {worker_os.getpid()}"

    @flow(name="log_flood")
    def flood(n: int, width: int) -> str:
        return chatty(n, width)

    terminal = CountingStream()
    real_stderr, sys.stderr = sys.stderr, terminal
    try:
        flood(10, width)  # imports, a first cluster start and the database out of the way
        before_db = database_bytes(home)
        terminal.bytes = terminal.lines = 0
        started = time.perf_counter()
        with PeakRSS() as memory:
            state = flood(lines, width, return_state=True)
        seconds = time.perf_counter() - started
    finally:
        sys.stderr = real_stderr
    assert state.is_completed(), state
    assert state.result() != f"pid {os.getpid()}", "the task must run on a worker process"
    growth_db = database_bytes(home) - before_db
    with sqlite3.connect(home / "dagrun.db") as connection:
        (flow_run_id,) = connection.execute(
            "SELECT id FROM flow_runs WHERE parent_flow_run_id IS NULL ORDER BY start_time DESC LIMIT 1"
        ).fetchone()
    rows, stored_bytes, markers = stored_logs(home, flow_run_id)
    produced_rows = lines + 2  # the task's lines and the flow's two lines, uncapped
    per_row = growth_db / rows if rows else 0
    cap = log_cap_bytes()

    print(f"log flood: 1 task printing {lines:,} lines of {options.line_bytes} bytes "
          f"({lines * options.line_bytes / MB:,.0f} MB), log cap {'off' if cap is None else f'{cap:,} bytes'}")
    print(f"  wall time                 {seconds:8.1f} s")
    print(f"  driver RSS growth         peak +{(memory.peak - memory.start) / 2**20:6.0f} MiB   "
          f"after +{(memory.end - memory.start) / 2**20:6.0f} MiB   (aim <= 150 MB)")
    print(f"  {'':24}  {'stored (capped)':>18}  {'produced (uncapped)':>20}")
    print(f"  {'log rows':24}  {rows:>18,}  {produced_rows:>20,}")
    print(f"  {'message bytes':24}  {stored_bytes:>18,}  {lines * width:>20,}")
    print(f"  {'database growth (bytes)':24}  {growth_db:>18,}  {round(per_row * produced_rows):>20,}  "
          f"(uncapped estimated at {per_row:.0f} bytes per row)")
    print(f"  {'terminal output (bytes)':24}  {terminal.bytes:>18,}  {'':>20}")
    if cap is not None:
        ok = growth_db <= cap * 1.1
        print(f"  database growth {growth_db / cap:.0%} of the cap (aim <= 110%): {'ok' if ok else 'OVER'}")
    for marker in markers:
        print(f"  stored: {marker}")
    logging.shutdown()


if __name__ == "__main__":
    main()
