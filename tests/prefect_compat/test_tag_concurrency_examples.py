"""Prefect's tag-based concurrency limits how-to, its examples with `prefect` -> `dagrun` in
the imports; the limits set with dagrun's CLI (`dagrun concurrency set TAG N`, as
`prefect concurrency-limit create TAG N`).

Source: PrefectHQ/prefect docs/v3/how-to-guides/workflows/tag-based-concurrency-limits.mdx.
Out of scope: its `get_client()` section (Prefect's API client), and the global concurrency
limits how-to (`prefect.concurrency.sync.concurrency`, slots leased from a Prefect server).
"""

from __future__ import annotations

from console_script import dagrun as dagrun_cli
from prefect_examples import flow_runs, load_example, on_executor, task_run_states  # noqa: F401

TAGGED_TASK = '''\
from dagrun import flow, task

@task(tags=["database"])
def fetch_data():
    # This task will respect the "database" tag's concurrency limit
    return "data"

@flow
def my_workflow():
    fetch_data()
'''

TAG_LIMIT = '''\
from dagrun import flow, task

@task(tags=["database"])
def query_database(query: str):
    # Simulate database work
    return f"Results for {query}"

@flow
def data_pipeline():
    # These will respect the "database" tag limit
    query_database("SELECT * FROM users")
    query_database("SELECT * FROM orders")
    query_database("SELECT * FROM products")
'''

MULTIPLE_TAGS = '''\
from dagrun import task

@task(tags=["database", "analytics"])
def complex_query():
    # This task needs available slots in both "database" AND "analytics" limits
    return "complex results"
'''


def _limit(tag: str, slots: int) -> None:
    result = dagrun_cli("concurrency", "set", tag, str(slots))
    assert result.returncode == 0, result.stderr


def test_a_tagged_task_runs_under_its_tags_limit(on_executor, tmp_path):
    _limit("database", 1)
    load_example(tmp_path, TAGGED_TASK).my_workflow()
    [run] = flow_runs()
    assert [state for _, state in task_run_states(run)] == ["Completed"]


def test_tagged_calls_run_one_at_a_time_under_a_limit_of_one(on_executor, tmp_path):
    _limit("database", 1)
    load_example(tmp_path, TAG_LIMIT).data_pipeline()
    [run] = flow_runs()
    task_runs = run["task_runs"]
    assert [task_run["state"] for task_run in task_runs] == ["Completed"] * 3
    spans = sorted((task_run["start_time"], task_run["end_time"]) for task_run in task_runs)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans


def test_a_task_with_two_limited_tags_runs(on_executor, tmp_path):
    _limit("database", 1)
    _limit("analytics", 1)
    complex_query = load_example(tmp_path, MULTIPLE_TAGS).complex_query
    assert complex_query() == "complex results"
    assert complex_query.tags == frozenset({"database", "analytics"})
