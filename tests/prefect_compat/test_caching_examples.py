"""Prefect's caching how-to and concept pages, their examples with `prefect` -> `dagrun` in the
imports. The examples that call tasks outside any flow run them in-process (no executor).

Sources (PrefectHQ/prefect):
- docs/v3/how-to-guides/workflows/cache-workflow-steps.mdx. "Cache in a distributed
  environment" needs `prefect_aws` blocks saved to a Prefect server: out of scope.
- docs/v3/concepts/caching.mdx
Out of scope, docs/v3/advanced/caching.mdx: `.configure(key_storage=..., isolation_level=...,
lock_manager=...)`, `prefect.transactions` and `prefect_redis` (listed in the report).
"""

from __future__ import annotations

from prefect_examples import flow_runs, load_example, on_executor, run_scripts, task_run_states  # noqa: F401

PERSIST_RESULT = '''\
from dagrun import task, flow

@task(persist_result=True)
def add_one(x: int):
    return x + 1

@flow
def my_flow():
    add_one(1) # will not be cached
    add_one(1) # will be cached
    add_one(2) # will not be cached

if __name__ == "__main__":
    my_flow()
'''

CACHE_ON_INPUTS = '''\
from dagrun import task
from dagrun.cache_policies import INPUTS

import time


@task(cache_policy=INPUTS)
def my_stateful_task(x: int):
    print('sleeping')
    time.sleep(10)
    return x + 1

my_stateful_task(x=1) # sleeps
my_stateful_task(x=1) # does not sleep
my_stateful_task(x=2) # sleeps
'''

CACHE_ON_SOME_INPUTS = '''\
from dagrun import task
from dagrun.cache_policies import INPUTS

import time


@task(cache_policy=INPUTS - 'debug')
def my_stateful_task(x: int, debug: bool = False):
    print('sleeping')
    time.sleep(10)
    return x + 1

my_stateful_task(x=1) # sleeps
my_stateful_task(x=1, debug=True) # does not sleep
my_stateful_task(x=1, debug=False) # does not sleep
'''

CACHE_EXPIRATION = '''\
from dagrun import task
from dagrun.cache_policies import INPUTS

import time
from datetime import timedelta


@task(cache_policy=INPUTS, cache_expiration=timedelta(seconds=10))
def my_stateful_task(x: int):
    print('sleeping')
    time.sleep(10)
    return x + 1

my_stateful_task(x=1) # sleeps
my_stateful_task(x=1) # does not sleep
# ... 10 seconds pass ...
my_stateful_task(x=1) # sleeps again
'''

REFRESH_CACHE = '''\
import random

from dagrun import task
from dagrun.cache_policies import TASK_SOURCE


@task(cache_policy=TASK_SOURCE, refresh_cache=True)
def never_caching_task():
    return random.random()
'''

NO_REFRESH = '''\
import random

from dagrun import task
from dagrun.cache_policies import TASK_SOURCE


@task(cache_policy=TASK_SOURCE, refresh_cache=False)
def caching_task():
    return random.random()
'''

MULTIPLE_CRITERIA = '''\
from dagrun import task
from dagrun.cache_policies import INPUTS, TASK_SOURCE

@task(cache_policy=INPUTS + TASK_SOURCE)
def my_task(x: int):
    return x + 1
'''

SOURCE_AND_INPUTS = '''\
from dagrun import task
from dagrun.cache_policies import TASK_SOURCE, INPUTS

@task(cache_policy=TASK_SOURCE + INPUTS)
def my_cached_task(x: int):
    return x + 42
'''

CUSTOM_POLICY = '''\
from dagrun import task
from dagrun.cache_policies import INPUTS


my_custom_policy = INPUTS - 'debug'

@task(cache_policy=my_custom_policy)
def my_cached_task(x: int, debug: bool = False):
    print('running...')
    return x + 42


my_cached_task(1)
my_cached_task(1, debug=True) # still uses the cache
'''

CACHE_KEY_FUNCTION = '''\
from dagrun import task


def static_cache_key(context, parameters):
    # return a constant
    return "static cache key"


@task(cache_key_fn=static_cache_key)
def my_cached_task(x: int):
    return x + 1
'''


def test_the_second_identical_call_in_a_run_is_cached(on_executor, tmp_path):
    load_example(tmp_path, PERSIST_RESULT).my_flow()
    [run] = flow_runs()
    # Prefect: Completed(), Cached(type=COMPLETED), Completed()
    assert [state for _, state in task_run_states(run)] == ["Completed", "Cached", "Completed"]


def test_cache_policies_outside_a_flow_skip_the_sleep_on_a_hit(tmp_path):
    results = run_scripts(
        tmp_path,
        {"inputs": CACHE_ON_INPUTS, "some_inputs": CACHE_ON_SOME_INPUTS, "expiration": CACHE_EXPIRATION},
        own_homes=True,
    )
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr)
    assert results["inputs"].stdout.splitlines() == ["sleeping", "sleeping"]  # x=1, then x=2
    assert results["some_inputs"].stdout.splitlines() == ["sleeping"]  # `debug` is not in the key
    # As written, no 10 s pass between the calls: the entry has not expired yet.
    assert results["expiration"].stdout.splitlines() == ["sleeping"]


def test_refresh_cache_recomputes_and_otherwise_the_entry_is_reused(tmp_path):
    never = load_example(tmp_path, REFRESH_CACHE).never_caching_task
    assert never() != never()
    caching = load_example(tmp_path, NO_REFRESH).caching_task
    assert caching() == caching()


def test_policies_combine_with_plus(tmp_path):
    assert load_example(tmp_path, MULTIPLE_CRITERIA).my_task(1) == 2
    assert load_example(tmp_path, SOURCE_AND_INPUTS).my_cached_task(1) == 43


def test_an_input_taken_out_of_the_policy_does_not_change_the_key(tmp_path, capsys):
    load_example(tmp_path, CUSTOM_POLICY)
    assert capsys.readouterr().out.splitlines() == ["running..."]


def test_a_cache_key_function_chooses_the_key(tmp_path):
    my_cached_task = load_example(tmp_path, CACHE_KEY_FUNCTION).my_cached_task
    assert my_cached_task(1) == 2
    assert my_cached_task(2) == 2  # the same key: the first result is reused
