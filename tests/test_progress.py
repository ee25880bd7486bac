"""Terminal progress: shown when stderr is a terminal, absent when it is a pipe or file."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    '''
    import time
    from dagrun import flow, task
    from dagrun.executors import InProcessExecutor

    @task
    def nap(i):
        time.sleep(0.15)
        return i

    @flow(name="progress_demo", executor=InProcessExecutor())
    def demo():
        return sum(f.result() for f in nap.map(range(8)))

    print("sum", demo())
    '''
)


def run_with_stderr_on_a_terminal(script: str) -> tuple[str, str]:
    main, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    stdout = process.stdout.read()
    process.wait(timeout=60)
    return stdout, b"".join(chunks).decode(errors="replace")


def test_progress_counts_are_shown_on_a_terminal(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text(SCRIPT)
    stdout, terminal = run_with_stderr_on_a_terminal(str(script))
    assert "sum 28" in stdout
    assert "progress_demo-" in terminal and "completed" in terminal and "cached" in terminal


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "sum 28" in result.stdout
    assert "completed," not in result.stderr
    assert all(" | " in line for line in result.stderr.strip().splitlines())  # only log lines
