"""Running Prefect 3's documented examples as they are written, with only `prefect` replaced by
`dagrun` in their imports, on the executors dagrun's users get.

The examples name no executor, so the executor is chosen from outside the code, the way a user
would: `DAGRUN_EXECUTOR=threads`, or `DAGRUN_CLUSTER=<config>` naming the session's local Dask
cluster (started once, so 80 examples do not each pay for a cluster start). Scripts whose tasks
`print` run as `python example.py` on the real default (a LocalCluster the script starts, whose
workers write to the script's stdout) and on threads.

    def test_x(on_executor, tmp_path):
        example = load_example(tmp_path, SOURCE)   # a module of its own, run as Python runs it
        assert example.my_flow() == 3

    def test_y(script_executor, tmp_path):
        result = run_script(tmp_path, SOURCE)      # `python example.py`, the environment inherited
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

from console_script import dagrun as dagrun_cli


def use_executor(kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Select `kind` for every flow run of this test, in-process and in scripts it starts."""
    if kind == "threads":
        monkeypatch.setenv("DAGRUN_EXECUTOR", "threads")
    elif kind == "dask":
        cluster = request.getfixturevalue("local_cluster")
        config = tmp_path / "shared-local-cluster.yaml"
        config.write_text(f"address: {cluster.scheduler_address}\n")
        monkeypatch.setenv("DAGRUN_CLUSTER", str(config))
    # "default-cluster": nothing set, each flow run starts dagrun's default LocalCluster.
    return kind


@pytest.fixture(params=["dask", "threads"])
def on_executor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Each test twice: on a local Dask cluster (shared by the session) and on threads."""
    return use_executor(request.param, request, monkeypatch, tmp_path)


@pytest.fixture(params=["default-cluster", "threads"])
def script_executor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Each script twice: on the LocalCluster dagrun starts by default, and on threads."""
    return use_executor(request.param, request, monkeypatch, tmp_path)


_loaded = iter(range(1_000_000))


def load_example(tmp_path: Path, source: str) -> types.ModuleType:
    """Run `source` as a module of its own (top-level code included), from a real file.

    The module is not put in `sys.modules`: its functions are pickled by value, so Dask
    workers need not import it, as with a user's script."""
    name = f"prefect_example_{next(_loaded)}"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
    return module


def run_script(tmp_path: Path, source: str, name: str = "example.py", timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`python example.py` in `tmp_path`, as a user runs an example."""
    script = tmp_path / name
    script.write_text(source)
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )


def run_scripts(
    tmp_path: Path, sources: dict[str, str], timeout: float = 180, own_homes: bool = False
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several example scripts at once (they mostly sleep): name -> its finished process.
    `own_homes`: each script gets a `DAGRUN_HOME` of its own (caches not shared)."""
    started = {}
    for name, source in sources.items():
        script = tmp_path / f"{name}.py"
        script.write_text(source)
        environment = {**os.environ, "DAGRUN_HOME": str(tmp_path / f"{name}-home")} if own_homes else None
        started[name] = (
            [sys.executable, str(script)],
            subprocess.Popen(
                [sys.executable, str(script)], cwd=tmp_path, env=environment,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ),
        )
    finished = {}
    for name, (command, process) in started.items():
        stdout, stderr = process.communicate(timeout=timeout)
        finished[name] = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    return finished


def flow_runs() -> list[dict]:
    """Every flow run in the history (`dagrun runs show --json`), oldest first, with task runs."""
    listed = json.loads(dagrun_cli("runs", "ls", "--json").stdout)
    return [json.loads(dagrun_cli("runs", "show", run["id"], "--json").stdout) for run in reversed(listed)]


def task_run_states(run: dict) -> list[tuple[str, str]]:
    """(task run name, final state name) of a flow run, in the order the task runs were created."""
    return [(task_run["task_run_name"], task_run["state"]) for task_run in run["task_runs"]]


def messages(records: Sequence) -> list[str]:
    """The messages of captured log records."""
    return [record.getMessage() for record in records]
