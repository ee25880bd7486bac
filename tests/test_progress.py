"""Terminal progress: shown when stderr is a terminal, absent when it is a pipe or file."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    '''
    import sys, time
    from pathlib import Path
    from dagrun import flow, task
    from dagrun.executors import InProcessExecutor

    @task
    def nap(i):
        time.sleep(0.05)
        return i

    @task(cache=True)
    def double(i):
        return 2 * i

    @flow(name="warm_cache", executor=InProcessExecutor())
    def warm():
        return [double(i).result() for i in range(2)]

    @flow(name="progress_demo", executor=InProcessExecutor())
    def demo(release: str):
        total = sum(f.result() for f in nap.map(range(8))) + sum(double(i).result() for i in range(2))
        deadline = time.monotonic() + 30  # the test releases us once it has seen the final counts
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return total

    warm()
    print("sum", demo(sys.argv[1]))
    '''
)
FINAL_COUNTS = "8 completed, 0 running, 0 failed, 2 cached"
COUNTS = re.compile(r"progress_demo-\w+: (\d+) completed, (\d+) running, (\d+) failed, (\d+) cached")
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_with_stderr_on_a_terminal(script: Path, release: Path) -> tuple[str, str]:
    """Run `script` with stderr on a pseudo-terminal; create `release` once the terminal has
    shown the final counts (or after 60 s). Returns stdout and what the terminal showed."""
    main, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "200"}  # one progress line, never wrapped
    process = subprocess.Popen(
        [sys.executable, str(script), str(release)], stdout=subprocess.PIPE, stderr=secondary, text=True, env=env,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([main], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not release.exists() and FINAL_COUNTS in ESCAPES.sub("", b"".join(chunks).decode(errors="replace")):
                release.touch()
    finally:
        release.touch()
        os.close(main)
        stdout = process.stdout.read()
        process.wait(timeout=60)
    return stdout, ESCAPES.sub("", b"".join(chunks).decode(errors="replace"))


def test_progress_counts_are_shown_on_a_terminal(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text(SCRIPT)
    stdout, terminal = run_with_stderr_on_a_terminal(script, tmp_path / "release")
    assert "sum 30" in stdout
    shown = [tuple(int(n) for n in match) for match in COUNTS.findall(terminal)]
    assert shown, terminal
    assert shown[-1] == (8, 0, 0, 2), shown  # every task run counted once, in its category
    completed = [counts[0] for counts in shown]
    assert completed == sorted(completed), shown  # counts only go up
    assert all(sum(counts) <= 10 for counts in shown), shown


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text(SCRIPT)
    release = tmp_path / "release"
    release.touch()
    result = subprocess.run([sys.executable, str(script), str(release)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "sum 30" in result.stdout
    assert "completed," not in result.stderr
    assert all(" | " in line for line in result.stderr.strip().splitlines())  # only log lines
