"""Firing latency of `dagrun serve`: how long after a slot's time its run process starts.

    python benchmarks/serve_latency.py [--slots 8] [--interval 2] [--poll-interval 1.0]

Runs the real `dagrun serve FILE` (default poll interval) on a fresh database with one
deployment due every `--interval` seconds, watches its child processes with psutil, and for
each slot prints: when the service started the run (the tick that claimed it), when the run
process was created (psutil `create_time`, calibrated), and when the flow run began in the history
(after the interpreter and dagrun imported: what a user sees in `dagrun runs ls`).

Bar: every slot's process starts within 2 s of its time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import psutil

BAR_SECONDS = 2.0

FLOW = textwrap.dedent(
    """
    import time
    from dagrun import flow
    from dagrun.deployments import make_deployment
    from dagrun.executors import InProcessExecutor

    @flow(executor=InProcessExecutor())
    def tick(seconds: float = 0.5) -> None:
        time.sleep(seconds)

    every = make_deployment(tick, name="latency", interval={interval}, max_active_runs=4)
    """
)


def serve_command(*args: str) -> list[str]:
    from dagrun.cli.main import cli

    if "serve" in cli.commands:
        return [sys.executable, "-m", "dagrun", "serve", *args]
    return [sys.executable, "-m", "dagrun.cli.deploy_commands", "serve", *args]


def create_time_offset() -> float:
    """How far psutil's `create_time` is from `time.time()` here.

    psutil derives it from the boot time, which Linux gives in whole seconds, so it can be off
    by up to a second; time a few processes we start ourselves to correct for it.
    """
    offsets = []
    for _ in range(5):
        before = time.time()
        probe = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
        offsets.append(psutil.Process(probe.pid).create_time() - before)
        probe.wait()
    return statistics.median(offsets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        flows = root / "flows.py"
        flows.write_text(FLOW.format(interval=options.interval))
        database = root / "dagrun.db"
        env = {**os.environ, "DAGRUN_DATABASE_URL": str(database), "DAGRUN_HOME": str(root / "home")}
        with open(root / "serve.log", "w") as log:
            server = subprocess.Popen(
                serve_command(str(flows), "--poll-interval", str(options.poll_interval)),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        created: dict[int, float] = {}
        try:
            deadline = time.monotonic() + options.slots * options.interval + 30
            while len(created) < options.slots + 1 and time.monotonic() < deadline:
                try:
                    for child in psutil.Process(server.pid).children(recursive=False):
                        created.setdefault(child.pid, child.create_time())
                except psutil.NoSuchProcess:
                    raise SystemExit(f"dagrun serve exited:\n{(root / 'serve.log').read_text()}") from None
                time.sleep(0.005)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        with sqlite3.connect(database) as connection:
            claims = connection.execute(
                "SELECT r.slot, r.started_at, r.pid, f.start_time FROM deployment_runs r "
                "LEFT JOIN flow_runs f ON f.id = r.id WHERE r.slot IS NOT NULL ORDER BY r.slot"
            ).fetchall()

    offset = create_time_offset()
    created = {pid: moment - offset for pid, moment in created.items()}
    # The first slot may have been due before the service finished starting: skip it.
    rows = [row for row in claims if row[2] in created][1 : options.slots + 1]
    if not rows:
        raise SystemExit("no runs were started")
    print(
        f"dagrun serve, one deployment every {options.interval:g} s, "
        f"--poll-interval {options.poll_interval:g} "
        f"(psutil create_time corrected by {-offset:+.3f} s)"
    )
    print(f"{'slot (UTC)':<28}{'service tick':>18}{'process created':>18}{'flow run began':>17}")
    process_latencies = []
    for slot, started_at, pid, flow_start in rows:
        slot_time = datetime.fromisoformat(slot).timestamp()
        process_latencies.append(created[pid] - slot_time)
        began = f"{flow_start - slot_time:+.3f} s" if flow_start is not None else "-"
        print(f"{slot:<28}{started_at - slot_time:>+16.3f} s{created[pid] - slot_time:>+16.3f} s{began:>17}")
    worst = max(process_latencies)
    print(
        f"process start after slot: median {statistics.median(process_latencies):.3f} s, "
        f"max {worst:.3f} s over {len(rows)} slots (bar: {BAR_SECONDS:g} s) -> "
        f"{'PASS' if worst <= BAR_SECONDS else 'FAIL'}"
    )
    if worst > BAR_SECONDS:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
