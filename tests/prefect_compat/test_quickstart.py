"""Prefect's quickstart, `01_getting_started.py`, with `prefect` -> `dagrun` in its import.

Source: PrefectHQ/prefect docs/v3/get-started/quickstart.mdx, "What code should run?" (both tabs).
The deployment steps that follow (`prefect-cloud deploy`, `.serve()` to a Prefect server) are
out of scope: dagrun has its own (`dagrun deploy`).
"""

from __future__ import annotations

import re

from prefect_examples import flow_runs, load_example, on_executor, run_script, script_executor, task_run_states  # noqa: F401

GETTING_STARTED = '''\
from dagrun import flow, task
import random

@task
def get_customer_ids() -> list[str]:
    # Fetch customer IDs from a database or API
    return [f"customer{n}" for n in random.choices(range(100), k=10)]

@task
def process_customer(customer_id: str) -> str:
    # Process a single customer
    return f"Processed {customer_id}"

@flow
def main() -> list[str]:
    customer_ids = get_customer_ids()
    # Map the process_customer task across all customer IDs
    results = process_customer.map(customer_ids)
    return results


if __name__ == "__main__":
    main()
'''


def test_quickstart_script_runs_like_prefect(script_executor, tmp_path):
    result = run_script(tmp_path, GETTING_STARTED)
    assert result.returncode == 0, result.stderr
    # Prefect's output: the flow run begins, get_customer_ids and ten process_customer task
    # runs finish Completed, then the flow run finishes Completed.
    assert "Beginning flow run" in result.stderr and "Finished in state Completed" in result.stderr, result.stderr
    [run] = flow_runs()
    assert run["flow_name"] == "main" and run["state"] == "Completed"
    states = task_run_states(run)
    assert [state for _, state in states] == ["Completed"] * 11, states
    assert [name.split("-")[0] for name, _ in states] == ["get_customer_ids"] + ["process_customer"] * 10


def test_quickstart_main_returns_ten_processed_customers(on_executor, tmp_path):
    example = load_example(tmp_path, GETTING_STARTED)
    results = example.main()
    # `-> list[str]`: Prefect resolves the returned futures into their values.
    assert isinstance(results, list) and len(results) == 10, results
    assert all(isinstance(result, str) and re.fullmatch(r"Processed customer\d{1,2}", result) for result in results), results
