"""A flaky task retried by its policy: it fails twice with ConnectionError, then succeeds.

    python examples/retries.py
"""

import tempfile
from pathlib import Path

from dagrun import exponential_backoff, flow, get_run_logger, task


@task(retries=3, retry_delay_seconds=exponential_backoff(0.5), retry_on=ConnectionError)
def fetch(counter_file: str) -> str:
    counter = Path(counter_file)
    attempt = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(attempt))
    if attempt < 3:
        raise ConnectionError(f"service unavailable (attempt {attempt})")
    get_run_logger().info("fetched on attempt %d", attempt)
    return f"payload after {attempt} attempts"


@flow(name="flaky_fetch")
def flaky_fetch() -> str:
    with tempfile.TemporaryDirectory() as scratch:
        return fetch(str(Path(scratch) / "attempts")).result()


if __name__ == "__main__":
    print(flaky_fetch())
