"""The flows `docs/make_screenshots.py` runs, beside the ones in examples/, for the dashboard's
screenshots: a nightly pipeline that fails on one day's data (after a retry, with a cached
lookup), a report held at a gate so it can be photographed while a task runs, and a 5,000-task
map. `nightly` is the deployment the Deployments screenshot shows (`dagrun serve` this file).

SCREENSHOT_WORK names a scratch directory (markers and the gate file).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dagrun import flow, get_run_logger, task, unmapped

WORK = Path(os.environ.get("SCREENSHOT_WORK", "."))


@task(cache=True)
def lookup(table: str) -> dict[str, str]:
    get_run_logger().info("loaded table %s", table)
    return {"DE": "Germany", "FR": "France", "NL": "Netherlands"}


@task
def extract(day: str) -> list[dict[str, str]]:
    rows = [{"day": day, "country": code} for code in ("DE", "FR", "NL", "DE")]
    get_run_logger().info("extracted %d rows for %s", len(rows), day)
    return rows


@task(retries=1, retry_delay_seconds=0.5)
def transform(rows: list[dict[str, str]], codes: dict[str, str]) -> list[dict[str, str]]:
    if rows[0]["day"] == "2026-11-25":  # that day's export is broken
        marker = WORK / "transform-attempted"
        if not marker.exists():
            marker.write_text("1")
            raise ConnectionError("reset by peer")
        raise ValueError("bad row 42")
    return [{**row, "country": codes[row["country"]]} for row in rows]


@task
def load(rows: list[dict[str, str]]) -> int:
    print(f"Loading {len(rows)} rows")
    return len(rows)


@flow(name="nightly_etl")
def nightly_etl(day: str = "2026-11-24") -> int:
    codes = lookup("country_codes")
    return load(transform(extract(day), codes))


nightly = nightly_etl.deployment(
    name="nightly", cron="0 2 * * *", timezone="Europe/Berlin", parameters={"day": "2026-11-24"}
)


@task
def fetch(source: str) -> list[int]:
    return list(range(len(source)))


@task
def summarise(part: int, rows: list[int]) -> int:
    time.sleep(0.2)
    return part + sum(rows)


@task
def render(parts: list[int]) -> str:
    get_run_logger().info("rendering %d parts", len(parts))
    deadline = time.monotonic() + 600  # waits for make_screenshots.py to photograph it
    while not (WORK / "render-gate").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"report of {sum(parts)}"


@task
def publish(report: str) -> str:
    get_run_logger().info("published %s", report)
    return report


@flow(name="weekly_report")
def weekly_report(source: str = "warehouse") -> str:
    rows = fetch(source)
    parts = summarise.map(range(6), rows=unmapped(rows))
    return publish(render(parts))


@task
def split(parts: int) -> int:
    return parts


@task
def shard(n: int, parts: int) -> int:
    return n % (parts + 1)


@task
def check(value: int) -> int:
    if value in (10, 500, 1500):
        raise ValueError(f"shard {value} is empty")
    return value


@task
def combine(a: int, b: int) -> int:
    return a + b


@task
def total(values: list[int]) -> int:
    return sum(values)


@flow(name="big_map")
def big_map(shards: int = 2000) -> int:
    """1 + 2,000 + 2,000 + 998 + 1 = 5,000 task runs; three shards fail."""
    parts = split(shards)
    checked = check.map(shard.map(range(1, shards + 1), parts=unmapped(parts)))
    pairs = combine.map(checked[0 : shards - 4 : 2], checked[1 : shards - 4 : 2])
    return total(pairs)
