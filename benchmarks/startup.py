"""Start-up: the ETL example as a whole process (import, cluster start, run, shutdown) vs a
raw-Dask script making the same three dependent calls on a LocalCluster, side by side.

    python benchmarks/startup.py [--repeats 5]

Bar: dagrun <= 1.5 s wall and <= 2x raw Dask.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RAW_SCRIPT = textwrap.dedent(
    '''
    from distributed import Client, LocalCluster

    def extract(day):
        return [1, 2, 3, None, 5]

    def transform(data):
        return [x for x in data if x is not None]

    def load(data):
        print(f"Loading data: {data}")
        return len(data)

    if __name__ == "__main__":
        with LocalCluster(host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            raw = client.submit(extract, "2026-11-25")
            clean = client.submit(transform, raw)
            print(f"Loaded {client.submit(load, clean).result()} rows")
    '''
)


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or "Loaded 4 rows" not in result.stdout:
        raise SystemExit(f"{command} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        raw_script = Path(scratch) / "raw_etl.py"
        raw_script.write_text(RAW_SCRIPT)
        commands = {
            "raw Dask": [sys.executable, str(raw_script)],
            "dagrun": [sys.executable, str(REPO / "examples" / "etl.py")],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.repeats):  # interleaved, so machine load hits both alike
            for name, command in commands.items():
                times[name].append(wall_time(command))
    raw, dagrun = min(times["raw Dask"]), min(times["dagrun"])
    print(f"{'process':<10} {'best s':>7} {'median s':>9}")
    for name, samples in times.items():
        print(f"{name:<10} {min(samples):7.2f} {sorted(samples)[len(samples) // 2]:9.2f}")
    print(f"ratio dagrun/raw (best): {dagrun / raw:.2f}   bar: dagrun <= 1.5 s and ratio <= 2.0")


if __name__ == "__main__":
    main()
