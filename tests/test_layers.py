"""What a worker imports: only worker-side dagrun code, never the driver.

The layers are written down as import-linter contracts in pyproject.toml; `lint-imports`
checks them, and fails when a worker-side module reaches for the engine, the run history,
the CLI, the dashboard or the deployments. The import graph is not the whole story (Python
runs every package's `__init__` on the way to a module, and a user's module imports what it
imports), so two more tests look at `sys.modules`: of a fresh interpreter that runs a task
through the worker entry point, and of a real Dask worker process after it ran a flow's tasks.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import distributed
import pytest

from dagrun.executors import DaskExecutor
from dagrun.results import ResultStore
from dagrun.runner import SharedSpec, TaskSpec
from dagrun.tasks import Task

REPO = Path(__file__).resolve().parents[1]

# What a worker needs to run a task: the entry point, the task wrapper and `Task` itself
# (unpickled with the spec), retries, logs and their cap, the result store and hashing.
WORKER_SIDE = frozenset({
    "dagrun",
    "dagrun.async_support",
    "dagrun.cache_keys",
    "dagrun.cache_policies",
    "dagrun.call_sites",
    "dagrun.config",
    "dagrun.content_hashing",
    "dagrun.context",
    "dagrun.errors",
    "dagrun.executors",
    "dagrun.executors.dask_batches",
    "dagrun.executors.dask_events",
    "dagrun.executors.dask_logs",
    "dagrun.executors.dask_worker",
    "dagrun.future_values",
    "dagrun.futures",
    "dagrun.hashing",
    "dagrun.log_cap",
    "dagrun.logs",
    "dagrun.nested",
    "dagrun.nested_runs",
    "dagrun.private_files",
    "dagrun.results",
    "dagrun.results.envelope",
    "dagrun.results.keys",
    "dagrun.results.serializers",
    "dagrun.results.store",
    "dagrun.prefect_options",
    "dagrun.retry",
    "dagrun.retry_conditions",
    "dagrun.run_names",
    "dagrun.runner",
    "dagrun.secrets",
    "dagrun.state_hooks",
    "dagrun.states",
    "dagrun.task_events",
    "dagrun.tasks",
    "dagrun.tracebacks",
})
DRIVER_SIDE = (
    "dagrun.engine", "dagrun.history", "dagrun.cli", "dagrun.server", "dagrun.deployments",
    "dagrun.flows", "dagrun.task_runs", "dagrun.task_run_record", "dagrun.task_recovery",
    "dagrun.task_cache_plan", "dagrun.caching", "dagrun.recorder", "sqlite3",
)
# A user's module that declares its flow next to its tasks (`from dagrun import flow, task`)
# also loads the `@flow` decorator on the worker, and nothing behind it.
FLOW_DECORATOR = frozenset({"dagrun.flows", "dagrun.parameters", "dagrun.parameter_types", "dagrun.task_runners"})


def driver_side(modules: set[str], allowed: frozenset[str] = frozenset()) -> list[str]:
    return sorted(
        name for name in modules - allowed
        if any(name == prefix or name.startswith(prefix + ".") for prefix in DRIVER_SIDE)
    )


def environment(*paths: Path) -> dict[str, str]:
    """This environment, with `paths` first on PYTHONPATH (the repo's `dagrun` is analysed)."""
    pythonpath = [str(path) for path in paths] + [os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(part for part in pythonpath if part)}


def run_lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    lint_imports = shutil.which("lint-imports")
    assert lint_imports, "lint-imports is not installed: pip install -e '.[test]' (it is import-linter's)"
    return subprocess.run(
        [lint_imports, "--no-cache", "--no-logo", str(REPO / "pyproject.toml")],
        cwd=package_parent, env=environment(package_parent), capture_output=True, text=True, timeout=180,
    )


def test_the_layers_written_in_pyproject_hold():
    result = run_lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_lint_imports_fails_when_worker_side_code_reaches_for_the_history(tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "dagrun", copy / "dagrun", ignore=shutil.ignore_patterns("__pycache__"))
    retry = copy / "dagrun" / "retry.py"
    retry.write_text(retry.read_text() + "\nfrom dagrun.recorder import RunRecorder  # noqa: E402\n")

    result = run_lint_imports(copy)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 2 broken" in result.stdout
    assert "dagrun.retry is not allowed to import dagrun.recorder" in result.stdout
    assert "dagrun.executors.dask_worker is not allowed to import dagrun.history" in result.stdout


def fresh_interpreter(code: str, *args: str, paths: tuple[Path, ...] = ()) -> dict:
    """Run `code` in a new Python process; it prints one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=environment(REPO, *paths), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


KEY = "3f9a1c" * 6


def test_a_task_run_through_the_worker_entry_point_loads_only_worker_side_code(tmp_path: Path):
    def double(x: int) -> int:  # a local function: pickled by value, as from `dagrun run FILE`
        return 2 * x

    task = Task(double, cache=True, retries=2, cache_expiration=60)
    spec = TaskSpec(task, "flow-run-1", "etl-1", log_prints=False, store=ResultStore(tmp_path / "results"))
    (tmp_path / "spec.pickle").write_bytes(pickle.dumps(SharedSpec.of(spec)))

    loaded = fresh_interpreter(
        """
        import json, pickle, sys
        import dagrun.executors.dask_worker  # what dagrun's Dask workers preload
        from dagrun.runner import run_task  # what its entry points call
        with open(sys.argv[1], "rb") as handle:
            shared = pickle.load(handle)  # as a worker receives it
        records = []
        value = run_task(shared.load(), "task-run-1", 0, (21,), {}, records.append, sys.argv[2])
        print(json.dumps({"value": value, "modules": sorted(sys.modules)}))
        """,
        str(tmp_path / "spec.pickle"), KEY,
    )

    assert loaded["value"] == 42
    assert ResultStore(tmp_path / "results").get(KEY) == 42  # the worker wrote the entry
    modules = {name for name in loaded["modules"] if name.startswith("dagrun") or name == "sqlite3"}
    assert driver_side(modules) == []
    assert sorted(modules - WORKER_SIDE) == []


def test_importing_dagrun_and_its_decorators_loads_no_driver(tmp_path: Path):
    (tmp_path / "user_tasks.py").write_text(textwrap.dedent("""
        from dagrun import flow, task

        @task
        def extract() -> int:
            return 1

        @flow
        def etl() -> int:
            return extract()
    """))

    loaded = fresh_interpreter(
        """
        import json, sys
        import dagrun
        before = sorted(sys.modules)
        names = {name: hasattr(dagrun, name) for name in dagrun.__all__}
        import user_tasks
        print(json.dumps({"names": names, "bare": before, "user": sorted(sys.modules)}))
        """,
        paths=(tmp_path,),
    )

    assert all(loaded["names"].values()), loaded["names"]
    assert [name for name in loaded["bare"] if name.startswith("dagrun.")] == []  # names load on first use
    assert driver_side(set(loaded["user"]), FLOW_DECORATOR) == []


USER_FLOW = '''
"""A user's module with its flow next to its tasks; Dask pickles the tasks by reference, so
the worker imports this module, and with it `from dagrun import flow, task`."""

import sys

from dagrun import flow, get_run_logger, task


@task(cache=True)
def double(x: int) -> int:
    get_run_logger().info(f"Doubling {x}")
    return 2 * x


@task(retries=1)
def add(a: int, b: int) -> int:
    return a + b


@flow
def pipeline(x: int) -> int:
    return add(double(x), double(x + 1)).result()


def loaded_modules() -> list[str]:
    """Run on each worker (`client.run`) after the flow."""
    return sorted(name for name in sys.modules if name.startswith(("dagrun", "sqlite3", __name__)))
'''


def test_a_real_dask_worker_that_ran_a_flows_tasks_loaded_only_worker_side_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "lean_user_flow.py").write_text(USER_FLOW)
    monkeypatch.syspath_prepend(str(tmp_path))  # the worker processes import the module by name
    user = importlib.import_module("lean_user_flow")
    try:
        with distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", preload=["dagrun.executors.dask_worker"],
        ) as cluster, distributed.Client(cluster) as client:
            # A fresh worker process: nothing but Dask's and dagrun's preload is loaded yet.
            pipeline = user.pipeline.with_options(executor=DaskExecutor(address=cluster.scheduler_address))

            assert pipeline(3) == 14

            loaded = client.run(user.loaded_modules)
    finally:
        sys.modules.pop("lean_user_flow", None)

    [(worker, modules)] = loaded.items()
    modules = set(modules)
    assert "lean_user_flow" in modules, f"{worker} never imported the user's module"
    assert {"dagrun.runner", "dagrun.tasks", "dagrun.executors.dask_worker"} <= modules
    assert driver_side(modules, FLOW_DECORATOR) == [], f"{worker} loaded driver-side code"
    assert sorted(modules - WORKER_SIDE - FLOW_DECORATOR - {"lean_user_flow"}) == []
