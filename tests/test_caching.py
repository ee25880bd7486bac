"""Cross-run caching as DESIGN section 3 and issue 3 say: keys from code, inputs and upstream
content; hits decided in the driver before dispatch; a cached result is never wrong.

The must-show scenario edits a real flow file and runs it as `python flow.py` in separate
processes, counting task executions in a file, the way redun's cache tests do.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import distributed
import pytest

from dagrun import flow, task
from dagrun.engine import run_flow
from dagrun.errors import ConfigError
from dagrun.executors import InProcessExecutor
from dagrun.results import ResultStore
from dagrun.tasks import task_input_hash


def record(path: str, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(f"{text}\n")


def lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).exists() else []


@pytest.fixture
def log(tmp_path: Path) -> str:
    """A file that tasks append a line to each time they execute, in any process."""
    return str(tmp_path / "calls.log")


def run_with_decisions(flow_object, **parameters):
    """(final state, {task run name: CacheDecision}) of one run of `flow_object`."""
    engines = []
    state = run_flow(flow_object, (), parameters, return_state=True, observe=engines.append)
    planner = engines[0].tasks.planner
    return state, dict(planner.decisions) if planner is not None else {}


ETL = '''
import json, os, sys
from dagrun import flow, task
from dagrun.executors import InProcessExecutor

CALLS = os.environ["CALLS_FILE"]
SCALE = 10

def record(name):
    with open(CALLS, "a") as handle:
        handle.write(name + "\\n")

def keep(x):
    return x is not None

@task(cache=True)
def extract(day: str) -> list:
    record("extract")
    return [1, 2, None, 4]

@task(cache=True)
def transform(raw: list) -> list:
    record("transform")
    return [x for x in raw if keep(x)]

@task(cache=True)
def weight(factor: int) -> int:
    record("weight")
    return SCALE * factor

@task(cache=True)
def load(clean: list, w: int) -> int:
    record("load")
    return sum(clean) * w

EXECUTOR = InProcessExecutor() if os.environ["EXECUTOR"] == "in_process" else None  # None: local cluster

@flow(name="cached_etl", executor=EXECUTOR)
def cached_etl(day: str = "2026-11-25", factor: int = 1) -> int:
    return load(transform(extract(day)), weight(factor))

if __name__ == "__main__":
    print("RESULT", json.dumps(cached_etl(**json.loads(sys.argv[1]))))
'''
ORIGINAL = "return [x for x in raw if keep(x)]"
EVERYTHING = ["extract", "load", "transform", "weight"]


class FlowFile:
    """A flow script in tmp_path, run as `python flow.py` with a shared DAGRUN_HOME."""

    def __init__(self, directory: Path, source: str, env: dict[str, str]) -> None:
        self.path = directory / "flow.py"
        self.calls = directory / "calls.log"
        self.path.write_text(source)
        self.env = {**os.environ, "CALLS_FILE": str(self.calls), **env}
        self._seen = 0

    def edit(self, old: str, new: str) -> None:
        source = self.path.read_text()
        assert old in source
        self.path.write_text(source.replace(old, new))

    def run(self, *args: str) -> tuple[str, list[str], str]:
        """(stdout, tasks executed by this run, stderr)."""
        result = subprocess.run(
            [sys.executable, str(self.path), *args], cwd=self.path.parent, env=self.env,
            capture_output=True, text=True, timeout=300, check=False,
        )
        assert result.returncode == 0, result.stderr
        executed = lines(str(self.calls))[self._seen :]
        self._seen += len(executed)
        return result.stdout, executed, result.stderr

    def run_etl(self, **params) -> tuple[int, list[str]]:
        """(the flow's value, the tasks it executed, sorted)."""
        stdout, executed, _ = self.run(json.dumps(params))
        return json.loads(stdout.split("RESULT ")[1]), sorted(executed)


@pytest.mark.parametrize("executor", ["dask", "in_process"])
def test_only_changed_tasks_and_their_downstream_rerun_across_processes(tmp_path, executor):
    etl = FlowFile(tmp_path, ETL, {"EXECUTOR": executor})
    assert etl.run_etl() == (70, EVERYTHING)
    stdout, executed, stderr = etl.run("{}")
    assert (stdout, executed) == ("RESULT 70\n", [])  # a fully cached rerun executes nothing
    assert "| transform-0 - Cached 'transform' (key " in stderr and "Finished in state Completed" in stderr

    etl.edit(ORIGINAL, "return [2 * x for x in raw if keep(x)]")
    assert etl.run_etl() == (140, ["load", "transform"])  # it and its downstream, not extract/weight
    etl.edit("return [2 * x for x in raw if keep(x)]", ORIGINAL)
    assert etl.run_etl() == (70, [])  # the original code's entries are still there
    assert etl.run_etl(factor=2) == (140, ["load", "weight"])  # one input: only what depends on it


def test_a_referenced_global_constant_or_helper_function_change_invalidates(tmp_path):
    etl = FlowFile(tmp_path, ETL, {"EXECUTOR": "in_process"})
    assert etl.run_etl() == (70, EVERYTHING)
    etl.edit("SCALE = 10", "SCALE = 100")
    assert etl.run_etl() == (700, ["load", "weight"])
    etl.edit("return x is not None", "return x is not None and x > 1")
    assert etl.run_etl() == (600, ["load", "transform"])


def test_a_code_change_that_keeps_the_output_does_not_rerun_downstream(tmp_path):
    etl = FlowFile(tmp_path, ETL, {"EXECUTOR": "in_process"})
    assert etl.run_etl() == (70, EVERYTHING)
    etl.edit(ORIGINAL, "return list(x for x in raw if keep(x))")
    assert etl.run_etl() == (70, ["transform"])  # load's key has transform's content hash: same


SENTINEL = '''
import json, os, sys
from dagrun import flow, task

UNPICKLED = os.environ["UNPICKLED_FILE"]

def rebuild(payload):
    with open(UNPICKLED, "a") as handle:  # every process that unpickles a Tracked logs its pid
        handle.write(f"{os.getpid()}\\n")
    return Tracked(payload)

class Tracked:
    def __init__(self, payload):
        self.payload = payload

    def __reduce__(self):
        return (rebuild, (self.payload,))

@task(cache=True)
def produce(size: int) -> Tracked:
    return Tracked(b"x" * size)

@task(cache=True)
def measure(tracked: Tracked) -> int:
    return len(tracked.payload)

@flow  # on the default local cluster
def sentinel(return_object: bool = False):
    tracked = produce(100_000)
    size = measure(tracked)
    return tracked if return_object else size

if __name__ == "__main__":
    value = sentinel(return_object=sys.argv[1] == "object")
    print("RESULT", json.dumps({"driver": os.getpid(), "value": type(value).__name__}))
'''


def test_a_fully_cached_rerun_moves_no_result_data_to_the_driver(tmp_path):
    unpickled = tmp_path / "unpickled.log"
    script = FlowFile(tmp_path, SENTINEL, {"UNPICKLED_FILE": str(unpickled)})

    def run(returning: str) -> tuple[str, str, list[str]]:
        before = len(lines(str(unpickled)))
        out = json.loads(script.run(returning)[0].split("RESULT ")[1])
        return str(out["driver"]), out["value"], lines(str(unpickled))[before:]

    driver, value, unpickled_by = run("size")  # first run: the value moves worker to worker
    assert value == "int" and driver not in unpickled_by
    driver, value, unpickled_by = run("size")  # fully cached: only measure's int is loaded
    assert value == "int" and unpickled_by == []  # the Tracked value was not read anywhere
    driver, value, unpickled_by = run("object")  # the control: returned, so the driver has it
    assert value == "Tracked" and driver in unpickled_by


def test_a_fully_cached_rerun_submits_nothing_to_the_cluster(local_cluster, dask_executor, log):
    @task(cache=True)
    def square(x: int) -> int:
        record(log, f"square {x}")
        return x * x

    add_up = task(lambda values: sum(values), name="add_up", cache=True)

    @flow(executor=dask_executor)
    def squares(returning: bool = False):
        total = add_up([square(i) for i in range(8)])
        return total if returning else None

    def submitted(**parameters) -> list[str]:
        with (
            distributed.Client(local_cluster, set_as_default=False) as client,
            distributed.get_task_stream(client=client) as stream,
        ):
            squares(**parameters)
        return sorted(item["key"].rsplit("-", 1)[0] for item in stream.data)

    assert submitted().count("square") == 8  # the stream sees the first run's tasks
    assert submitted() == []  # a hit never takes a worker slot
    # The returned value is read from the store by the driver (which needs it anyway): no task
    # loads it (test_a_fully_cached_rerun_moves_no_result_data_to_the_driver: only it is read).
    assert submitted(returning=True) == []
    assert len(lines(log)) == 8


def test_same_body_with_different_closure_values_does_not_share_an_entry(log):
    def scaler(factor: int):
        @task(cache=True, name="scale")
        def scale(x: int) -> int:
            record(log, f"x{factor}")
            return x * factor
        return scale

    double, triple = scaler(2), scaler(3)

    @flow(executor=InProcessExecutor())
    def both():
        return double(5), triple(5)

    assert both() == (10, 15) and lines(log) == ["x2", "x3"]
    assert both() == (10, 15) and lines(log) == ["x2", "x3"]
    assert len(list(ResultStore.from_env().entries("scale"))) == 2


def test_version_pins_identity_so_a_code_change_with_the_same_version_hits():
    def pinned(version: str, returns: str):
        @task(cache=True, name="pinned", version=version)
        def compute() -> str:
            return returns
        return flow(name="pinning", executor=InProcessExecutor())(lambda: compute())

    assert pinned("1", "old code")() == "old code"
    state, decisions = run_with_decisions(pinned("1", "edited code"))
    assert state.result() == "old code" and decisions["pinned-0"].hit
    state, decisions = run_with_decisions(pinned("2", "edited code"))
    assert state.result() == "edited code" and decisions["pinned-0"].reason == "code changed"


def test_cache_key_fn_decides_the_key_and_none_means_not_cached(log):
    contexts = []

    def by_day(context, parameters):
        contexts.append(context.task_run_name)
        return None if parameters["day"] == "never" else parameters["day"]

    @task(cache_key_fn=by_day)
    def fetch(day: str, verbose: bool) -> str:
        record(log, day)
        return f"data for {day}"

    @flow(executor=InProcessExecutor())
    def fetching(day: str, verbose: bool):
        return fetch(day, verbose)

    assert fetching("d1", True) == "data for d1"
    assert fetching("d1", False) == "data for d1"  # verbose is not in the key
    assert fetching("d2", True) == "data for d2"
    state, decisions = run_with_decisions(fetching, day="never", verbose=True)
    assert state.result() == "data for never" and decisions["fetch-0"].reason == "cache_key_fn returned None"
    assert lines(log) == ["d1", "d2", "never"] and contexts[0] == "fetch-0"


def test_task_input_hash_keys_on_the_inputs_values_including_upstream_results(log):
    numbers = task(lambda n: list(range(n)), name="numbers")

    @task(cache_key_fn=task_input_hash)
    def total(values: list, offset: int = 0) -> int:
        record(log, f"total {len(values)} {offset}")
        return sum(values) + offset

    summing = flow(name="summing", executor=InProcessExecutor())(lambda n, offset=0: total(numbers(n), offset=offset))
    assert [summing(4), summing(4), summing(5), summing(4, offset=1)] == [6, 6, 10, 7]
    assert lines(log) == ["total 4 0", "total 5 0", "total 4 1"]


def test_an_expired_entry_misses_with_reason_expired(log):
    @task(cache=True, cache_expiration=0.001)
    def fleeting() -> int:
        record(log, "fleeting")
        return 1

    @task(cache=True, cache_expiration=timedelta(hours=1))
    def lasting() -> int:
        record(log, "lasting")
        return 2

    @flow(executor=InProcessExecutor())
    def both():
        return fleeting(), lasting()

    assert both() == (1, 2)
    (entry,) = ResultStore.from_env().entries("fleeting")
    deadline = time.monotonic() + 5
    while time.time() <= entry.expires_at and time.monotonic() < deadline:  # 1 ms after the write
        time.sleep(0.001)
    state, decisions = run_with_decisions(both)
    assert state.result() == (1, 2)
    assert decisions["fleeting-0"].reason == "expired" and decisions["lasting-0"].hit
    assert lines(log) == ["fleeting", "lasting", "fleeting"]


@pytest.mark.parametrize("how", ["refresh_cache=True", "DAGRUN_REFRESH_CACHE=1"])
def test_refresh_recomputes_and_overwrites_the_entry(log, monkeypatch, how):
    @task(cache=True)
    def count() -> int:
        record(log, "count")
        return len(lines(log))  # a new value each time it runs

    refreshing = count.with_options(refresh_cache=True) if how == "refresh_cache=True" else count

    def counting(the_task):
        return flow(name="counting", executor=InProcessExecutor())(lambda: the_task())

    assert counting(count)() == 1
    if how == "DAGRUN_REFRESH_CACHE=1":
        monkeypatch.setenv("DAGRUN_REFRESH_CACHE", "1")
    state, decisions = run_with_decisions(counting(refreshing))
    assert state.result() == 2 and decisions["count-0"].reason == "refresh requested"
    monkeypatch.delenv("DAGRUN_REFRESH_CACHE", raising=False)
    state, decisions = run_with_decisions(counting(count))
    assert state.result() == 2 and decisions["count-0"].hit  # the entry now holds the new value
    assert len(list(ResultStore.from_env().entries("count"))) == 1


def test_an_argument_that_cannot_be_hashed_is_an_error_naming_task_and_argument(log):
    @task(cache=True)
    def guarded(lock) -> str:
        record(log, "guarded")
        return "ran"

    @flow(executor=InProcessExecutor())
    def locking():
        guarded(threading.Lock())

    state = locking(return_state=True)
    assert state.is_failed() and isinstance(state.exception, ConfigError)
    assert "argument 'lock' of task 'guarded'" in str(state.exception)
    assert lines(log) == []  # never a silent random key, never a run without a key


@pytest.mark.parametrize("where", ["header", "payload"])
def test_a_corrupted_entry_is_detected_logged_and_recomputed(log, caplog, where):
    @task(cache=True)
    def numbers(n: int) -> list:
        record(log, "numbers")
        return list(range(n))

    @flow(executor=InProcessExecutor())
    def listing():
        return numbers(5)

    assert listing() == [0, 1, 2, 3, 4]
    (entry,) = ResultStore.from_env().entries()
    data = bytearray(Path(entry.path).read_bytes())
    offset = data.index(b'"task_name"') + 3 if where == "header" else len(data) - 1
    data[offset] ^= 0x01
    Path(entry.path).write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="dagrun.results"):
        assert listing() == [0, 1, 2, 3, 4]
    assert lines(log) == ["numbers", "numbers"]
    discarded = [r.getMessage() for r in caplog.records if "Discarded result entry" in r.getMessage()]
    assert len(discarded) == 1 and entry.key in discarded[0] and "checksum mismatch" in discarded[0]
    assert [info.key for info in ResultStore.from_env().entries()] == [entry.key]  # rewritten


def test_a_hit_ends_cached_and_its_future_and_downstream_get_the_value(executor, log):
    @task(cache=True)
    def base(x: int) -> list:
        record(log, "base")
        return [x, x + 1]

    @task
    def total(values: list) -> int:
        record(log, "total")
        return sum(values)

    @flow(executor=executor)
    def report(x: int = 1):
        future = base(x)
        summed = total(future)
        return future.result(), future.state.name, future.state.is_completed(), summed

    assert report() == ([1, 2], "Completed", True, 3)
    assert report() == ([1, 2], "Cached", True, 3)
    assert lines(log) == ["base", "total", "total"]
