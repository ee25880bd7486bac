"""A flow called at module level (no `if __name__ == "__main__":`, as in many of Prefect's
docs) runs exactly once, with `python FILE` and with `dagrun run FILE`, on the default local
cluster: worker processes do not re-run the script, and none is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psutil

from conftest import wait_until_gone
from console_script import DAGRUN

SCRIPT = textwrap.dedent(
    '''
    from dagrun import flow, task

    print("module loaded")

    @task
    def add(x, y):
        return x + y

    @flow
    def adder(x: int = 1):
        return add(x, 2)

    # Uses the flow's value: a worker re-running this line would crash before it starts.
    print("total:", adder() + 1)
    '''
)


def _processes_with(marker: str) -> set[int]:
    """Processes (workers included) started with our marker in their environment."""
    pids = set()
    for process in psutil.process_iter():
        try:
            if process.environ().get("DAGRUN_TEST_MARKER") == marker:
                pids.add(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return pids


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    marker = uuid.uuid4().hex
    env = {**os.environ, "DAGRUN_TEST_MARKER": marker}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    left = wait_until_gone(_processes_with(marker), timeout=20)
    assert not left, f"worker processes left behind: {left}"
    return result


def test_python_script_calling_its_flow_at_module_level_runs_it_once(tmp_path):
    (tmp_path / "unguarded.py").write_text(SCRIPT)
    result = _run([sys.executable, "unguarded.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["module loaded", "total: 4"]
    assert result.stderr.count("Beginning flow run") == 1
    assert "Nanny failed to start" not in result.stderr


def test_dagrun_run_of_a_script_calling_its_flow_at_module_level_runs_it_once(tmp_path):
    (tmp_path / "unguarded.py").write_text(SCRIPT)
    result = _run([*DAGRUN, "run", "unguarded.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["module loaded", "total: 4"]
    assert result.stderr.count("Beginning flow run") == 1


def test_dagrun_run_with_params_of_a_self_running_script_says_they_were_not_applied(tmp_path):
    (tmp_path / "unguarded.py").write_text(SCRIPT)
    result = _run([*DAGRUN, "run", "unguarded.py", "--param", "x=5"], tmp_path)
    assert result.returncode == 2
    assert "ran its flow itself when imported" in result.stderr
    assert "Traceback" not in result.stderr
