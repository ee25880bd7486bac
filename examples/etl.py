"""The classic extract -> transform -> load flow.

    python examples/etl.py
    dagrun run examples/etl.py:simple_etl --param day=2026-11-24
"""

from dagrun import flow, get_run_logger, task


@task(retries=3, retry_delay_seconds=[1, 2, 4], cache=True)
def extract(day: str) -> list[int | None]:
    get_run_logger().info("extracting %s", day)
    return [1, 2, 3, None, 5]


@task
def transform(data: list[int | None]) -> list[int]:
    return [x for x in data if x is not None]


@task
def load(data: list[int]) -> int:
    print(f"Loading data: {data}")
    return len(data)


@flow(name="simple_etl")
def simple_etl_flow(day: str = "2026-11-25") -> int:
    raw = extract(day)  # submitted at once; returns a TaskFuture
    clean = transform(raw)  # depends on raw: runs when raw is done, on a worker
    return load(clean)


if __name__ == "__main__":
    loaded = simple_etl_flow()
    print(f"Loaded {loaded} rows")
