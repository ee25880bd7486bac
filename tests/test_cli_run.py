"""`dagrun run` as a user runs it: a real subprocess, real exit codes, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from conftest import wait_until_gone
from console_script import DAGRUN

REPO = Path(__file__).resolve().parents[1]

FLOWS = textwrap.dedent(
    '''
    import time
    from pathlib import Path
    from dagrun import flow, task, get_run_logger

    @task
    def double(x: int) -> int:
        get_run_logger().info("doubling %d", x)
        return 2 * x

    @task
    def explode(x):
        raise ValueError(f"bad value {x}")

    @task
    def sleeper(marker: str) -> None:
        Path(marker).write_text("started")
        time.sleep(60)

    @flow(name="doubler")
    def doubler(x: int = 1, label: str = "run"):
        get_run_logger().info("label=%s type=%s", label, type(label).__name__)
        return double(x)

    @flow
    def failing():
        explode(3)

    @flow
    def long_running(marker: str):
        sleeper(marker)
    '''
)


def dagrun(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DAGRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def write_flows(tmp_path: Path) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    return path


def test_run_a_flow_with_params(tmp_path):
    write_flows(tmp_path)
    result = dagrun("run", "flows.py:doubler", "--param", "x=21", "--param", "label=2026", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "doubler-" in result.stderr and "| double-0 - doubling 21" in result.stderr
    assert "label=2026 type=str" in result.stderr  # a str parameter stays a string
    assert "Finished in state Completed" in result.stderr


def test_unknown_flow_lists_the_flows_in_the_file(tmp_path):
    write_flows(tmp_path)
    result = dagrun("run", "flows.py:nope", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: No flow 'nope' in flows.py; flows in the file: doubler, failing, long_running"
    assert "Traceback" not in result.stderr


def test_bad_input_is_one_clear_line_and_a_non_zero_exit(tmp_path):
    write_flows(tmp_path)
    cases = {
        ("run", "missing.py"): "Error: No such flow file: missing.py",
        ("run", "flows.py:doubler", "--param", "y=1"): "Error: Flow 'doubler' has no parameter 'y' (parameters: x, label)",
        ("run", "flows.py:doubler", "--param", "x=abc"): "parameter 'x' expected int, got 'abc'",
        ("run", "flows.py:doubler", "--param", "x"): "Error: --param expects NAME=VALUE, got 'x'",
        ("run", "flows.py"): "Error: flows.py defines 3 flows (doubler, failing, long_running): name one as flows.py:FLOW",
    }
    for args, expected in cases.items():
        result = dagrun(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_failed_flow_exits_1_naming_the_error_and_task(tmp_path):
    write_flows(tmp_path)
    result = dagrun("run", "flows.py:failing", cwd=tmp_path)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "Flow run failed: ValueError: bad value 3 (raised by task run 'explode-0' in flow run "
        + last_line.split("in flow run ")[1]
    )
    assert "failing-" in last_line


def test_ctrl_c_cancels_exits_130_and_leaves_no_process(tmp_path):
    write_flows(tmp_path)
    marker = tmp_path / "started"
    process = subprocess.Popen(
        [*DAGRUN, "run", "flows.py:long_running", "--param", f"marker={marker}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT prints every thread's stack
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # the task is running on a worker
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        family = {process.pid} | {c.pid for c in psutil.Process(process.pid).children(recursive=True)}
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate(timeout=30)
            pytest.fail(f"dagrun run was still running 60 s after Ctrl-C; where its threads were:\n{stderr[-20000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Cancelled" in stderr
    assert "Traceback" not in stderr  # workers ignore the group's SIGINT: the driver stops them
    assert wait_until_gone(family) == set()


def test_python_dash_m_and_console_script_agree(tmp_path):
    result = subprocess.run([*DAGRUN, "--help"], capture_output=True, text=True, timeout=60)
    module = subprocess.run(
        [sys.executable, "-m", "dagrun", "--help"],  # python -m dagrun itself is under test
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == module.returncode == 0
    assert result.stdout == module.stdout and "run" in result.stdout


def dagrun_script(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed `dagrun` console script, as a user types it."""
    return subprocess.run([*DAGRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def only_error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a bad-input error prints; exit 2 and nothing else on stderr."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unreachable_scheduler_is_one_line_naming_address_and_timeout(tmp_path):
    write_flows(tmp_path)
    with socket.socket() as unused:  # bound, never listening: connections to it are refused
        unused.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
        (tmp_path / "remote.yaml").write_text(f"address: {address}\ninsecure: true\nconnect_timeout: 1.5\n")
        started = time.monotonic()
        result = dagrun_script("run", "flows.py:doubler", "--cluster", "./remote.yaml", cwd=tmp_path)
    line = only_error_line(result)
    assert line.startswith(f"Error: remote.yaml: cannot connect to the Dask scheduler at {address} within 1.5 s: ")
    assert "connect_timeout" in line
    assert time.monotonic() - started < 60


def test_a_syntax_error_in_the_flow_file_is_one_line_with_file_line_and_code(tmp_path):
    (tmp_path / "broken.py").write_text("from dagrun import flow\n\n@flow\ndef f(:\n    pass\n")
    line = only_error_line(dagrun_script("run", "broken.py", cwd=tmp_path))
    assert line == "Error: broken.py:4: SyntaxError: invalid syntax: def f(:"


def test_a_syntax_error_in_a_module_the_flow_file_imports_names_that_module(tmp_path):
    (tmp_path / "helpers.py").write_text("VALUE = (1,\n")
    (tmp_path / "uses.py").write_text("from helpers import VALUE\n")
    line = only_error_line(dagrun_script("run", "uses.py", cwd=tmp_path))
    assert line.startswith(f"Error: {tmp_path / 'helpers.py'}:1: SyntaxError: '(' was never closed"), line
