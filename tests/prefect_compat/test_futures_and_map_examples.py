"""Prefect's examples of futures, `.map`, `wait_for` and failures in concurrent work, with
`prefect` -> `dagrun` in the imports.

Sources (PrefectHQ/prefect):
- docs/v3/how-to-guides/workflows/run-work-concurrently.mdx: "Handling futures", "Using the
  `unmapped` annotation", "Nested mapped tasks", "Creating state dependencies", "Handling
  failures in concurrent work", "Real-world applications"
(the futures examples of docs/v3/concepts/task-runners.mdx are in test_task_runners_concept.py)
"""

from __future__ import annotations

import re

from prefect_examples import flow_runs, load_example, on_executor, task_run_states  # noqa: F401

RESULT = '''\
from dagrun import task, flow

@task
def cool_task():
    return "sup"
    
@flow
def my_workflow():
    future = cool_task.submit()
    result = future.result()
    print(result)
'''

WAIT_ONE = '''\
from dagrun import task, flow

@task
def cool_task():
    return "sup"
    
@flow
def my_workflow():
    future = cool_task.submit()
    future.wait()
'''

WAIT_MANY = '''\
from dagrun import task, flow
from dagrun.futures import wait


@task
def cool_task():
    return "sup"
    
    
@flow
def my_workflow():
    futures = [cool_task.submit() for _ in range(10)]
    wait(futures)
'''

FUTURE_AS_ARGUMENT = '''\
from dagrun import task, flow

@task
def cool_task():
    return "sup"


@task
def what_did_cool_task_say(what_it_said: str):
    return f"cool task said {what_it_said}"

@flow
def my_workflow():
    future = cool_task.submit()
    print(what_did_cool_task_say(future))
'''

MAP_WITH_A_STATIC_VALUE = '''\
from dagrun import flow, task

@task
def add_together(x, y):
    return x + y

@flow
def sum_it(numbers: list[int], static_value: int):
    futures = add_together.map(numbers, static_value)
    return futures.result()

resulting_sum = sum_it([1, 2, 3], 5)
assert resulting_sum == [6, 7, 8]
'''

MAP_WITH_UNMAPPED = '''\
from dagrun import flow, task, unmapped

@task
def sum_plus(x, static_iterable):
    return x + sum(static_iterable)

@flow
def sum_it(numbers, static_iterable):
    futures = sum_plus.map(numbers, unmapped(static_iterable))
    return futures.result()

resulting_sum = sum_it([4, 5, 6], [1, 2, 3])
assert resulting_sum == [10, 11, 12]
'''

NESTED_MAPPED_TASKS = '''\
import re

from dagrun import flow, task
from dagrun.futures import wait

def count_words(text: str) -> int:
    """Count the number of words in a text."""
    return len(text.split())

def extract_emails(text: str) -> list[str]:
    return re.findall(r"[\\w.+-]+@[\\w-]+\\.[\\w.-]+", text)

@task
def analyze_texts(texts: list[str]) -> dict[str, list[int | list[str]]]:
    futures = {
        op.__name__: task(op).map(texts) for op in [count_words, extract_emails]
    }
    wait([f for futs in futures.values() for f in futs])
    return {name: [f.result() for f in futs] for name, futs in futures.items()}

@flow
def run_text_analysis():
    """Analyze a batch of social media posts with multiple operations."""
    results = analyze_texts(
        texts=[
            "Just visited #Paris! Contact me at visitor@example.com #travel #vacation",
            "Working on my new #project. Reach out at developer@example.com if interested!",
            "Happy to announce our company event #celebration #milestone email: events@company.org",
        ]
    )
    print("\\nAnalysis Results:")
    print(f"  Word counts: {results['count_words']}")
    print(f"  Extracted emails: {results['extract_emails']}\\n")
    return results

run_text_analysis()
'''

STATE_DEPENDENCIES = '''\
from dagrun import flow, task
@task
def task_a():
    pass

@task
def task_b():
    pass

@task
def task_c():
    pass
    
@task
def task_d():
    pass

@flow
def my_flow():
    a = task_a.submit()
    b = task_b.submit()
    # Wait for task_a and task_b to complete
    c = task_c.submit(wait_for=[a, b])
    # task_d will wait for task_c to complete
    # Note: If waiting for one task it must still be in a list.
    d = task_d(wait_for=[c])
'''

FAILURES_IN_CONCURRENT_WORK = '''\
from typing import Any

from dagrun import flow, task
from dagrun.futures import wait
from dagrun.states import State

@task
def process_data(item: int) -> str:
    if item < 0:
        raise ValueError(f"Cannot process negative value: {item}")
    return f"Processed {item}"

@flow
def batch_processing():
    items = [1, -2, 3, -4, 5]
    
    # Submit all tasks and return the futures
    futures = process_data.map(items)
    
    # Wait for all futures to complete concurrently
    done, not_done = wait(futures)
    
    # Check each future's state
    successful: list[Any] = []
    failed: list[State] = []
    
    for future in done:
        if future.state.is_completed():
            successful.append(future.result())
        else:
            failed.append(future.state)
    
    print(f"Processed {len(successful)} items successfully")
    print(f"Failed to process {len(failed)} items")
    
    return successful
'''

EVALUATE_MODELS = '''\
import random
from dataclasses import dataclass

from dagrun import flow, task
from dagrun.futures import PrefectFuture, wait

@dataclass
class Dataset:
    name: str

@dataclass
class ModelConfig:
    name: str

@task(task_run_name="train on {dataset.name} with {model_config.name}")
def train_model(dataset: Dataset, model_config: ModelConfig) -> dict:
    return {
        "dataset": dataset.name,
        "model": model_config.name,
        "score": random.random(),
    }

@flow
def evaluate_models(datasets: list[Dataset], model_configs: list[ModelConfig]):
    all_futures: list[PrefectFuture[dict[str, object]]] = []
    for dataset in datasets:
        futures = train_model.map(
            dataset=dataset,
            model_config=model_configs,
        )
        all_futures.extend(futures)

    results = [future.result() for future in wait(all_futures).done]

    print(f"\\nBest model: {max(results, key=lambda r: r['score'])}")

evaluate_models(
    datasets=[
        Dataset("customers"), Dataset("products"), Dataset("orders")
    ],
    model_configs=[
        ModelConfig("random_forest"), ModelConfig("gradient_boosting")
    ],
)
'''


def test_future_result_returns_the_value(on_executor, tmp_path, capsys):
    load_example(tmp_path, RESULT).my_workflow()
    assert capsys.readouterr().out.splitlines() == ["sup"]


def test_waiting_for_futures_ends_with_them_completed(on_executor, tmp_path):
    load_example(tmp_path, WAIT_ONE).my_workflow()
    load_example(tmp_path, WAIT_MANY).my_workflow()
    one, many = flow_runs()
    assert [state for _, state in task_run_states(one)] == ["Completed"]
    assert [state for _, state in task_run_states(many)] == ["Completed"] * 10


def test_a_future_passed_to_a_task_becomes_its_value(on_executor, tmp_path, capsys):
    load_example(tmp_path, FUTURE_AS_ARGUMENT).my_workflow()
    assert capsys.readouterr().out.splitlines() == ["cool task said sup"]


def test_map_passes_a_non_iterable_argument_whole(on_executor, tmp_path):
    example = load_example(tmp_path, MAP_WITH_A_STATIC_VALUE)  # its own assert runs at import
    assert example.resulting_sum == [6, 7, 8]


def test_map_passes_an_unmapped_iterable_whole(on_executor, tmp_path):
    example = load_example(tmp_path, MAP_WITH_UNMAPPED)
    assert example.resulting_sum == [10, 11, 12]


def test_a_task_maps_tasks_of_its_own(on_executor, tmp_path, capsys):
    example = load_example(tmp_path, NESTED_MAPPED_TASKS)
    assert capsys.readouterr().out.splitlines() == [
        "",
        "Analysis Results:",
        "  Word counts: [9, 11, 10]",
        "  Extracted emails: [['visitor@example.com'], ['developer@example.com'], ['events@company.org']]",
        "",
    ]
    assert example.run_text_analysis()["count_words"] == [9, 11, 10]


def test_wait_for_orders_tasks_that_share_no_data(on_executor, tmp_path):
    load_example(tmp_path, STATE_DEPENDENCIES).my_flow()
    [run] = flow_runs()
    task_runs = {task_run["task_name"]: task_run for task_run in run["task_runs"]}
    assert all(task_run["state"] == "Completed" for task_run in task_runs.values()), task_runs
    assert task_runs["task_c"]["start_time"] >= max(task_runs["task_a"]["end_time"], task_runs["task_b"]["end_time"])
    assert task_runs["task_d"]["start_time"] >= task_runs["task_c"]["end_time"]


def test_failures_in_mapped_work_are_the_flows_to_handle(on_executor, tmp_path, capsys):
    example = load_example(tmp_path, FAILURES_IN_CONCURRENT_WORK)
    state = example.batch_processing(return_state=True)
    assert state.is_completed(), state  # the flow looked at every failure: Prefect ends it Completed
    assert sorted(state.result()) == ["Processed 1", "Processed 3", "Processed 5"]
    assert capsys.readouterr().out.splitlines() == ["Processed 3 items successfully", "Failed to process 2 items"]


def test_mapping_over_datasets_names_each_task_run(on_executor, tmp_path, capsys):
    load_example(tmp_path, EVALUATE_MODELS)  # the example runs its flow at module level
    best = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"Best model: \{'dataset': '\w+', 'model': '\w+', 'score': 0\.\d+\}", best), best
    [run] = flow_runs()
    assert sorted(task_run_states(run)) == sorted(
        (f"train on {dataset} with {model}", "Completed")
        for dataset in ("customers", "products", "orders") for model in ("random_forest", "gradient_boosting")
    )
