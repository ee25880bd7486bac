"""Scripts run the way users run them: the examples, a Prefect script with only its import
line changed, and a script that calls its flow without an `if __name__ == "__main__":` guard."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, timeout=timeout, cwd=path.parent
    )


@pytest.mark.parametrize(
    "example, expected",
    [
        ("etl.py", "Loaded 4 rows"),
        ("fan_out.py", "Sum of squares: 2470"),
        ("retries.py", "payload after 3 attempts"),
        ("dynamic.py", "Steps: 8"),
    ],
)
def test_examples_run_on_the_default_local_cluster(example, expected):
    result = run_script(REPO / "examples" / example)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert "on tcp://127.0.0.1:" in result.stderr  # a real local Dask cluster was used


PREFECT_SCRIPT = textwrap.dedent(
    '''
    from prefect import flow, task

    @task
    def extract():
        return [1, 2, 3, None, 5]

    @task(retries=2, retry_delay_seconds=0)
    def transform(data):
        return [x for x in data if x is not None]

    @task
    def load(data):
        print(f"Loading data: {data}")
        return sum(data)

    @task
    def add_one(x):
        return x + 1

    @flow
    def etl():
        raw = extract.submit()
        clean = transform.submit(raw)
        done = load.submit(clean)
        bumped = add_one.map([1, 2, 3])
        after = load.submit([b for b in bumped], wait_for=[done])
        print("total", done.result(), "bumped", [b.result() for b in bumped], "after", after.result())

    if __name__ == "__main__":
        etl()
    '''
)


def test_a_prefect_script_runs_unchanged_but_for_its_import_line(tmp_path):
    script = tmp_path / "prefect_etl.py"
    script.write_text(PREFECT_SCRIPT.replace("from prefect import flow, task", "from dagrun import flow, task"))
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    assert "Loading data: [1, 2, 3, 5]" in result.stdout
    assert "total 11 bumped [2, 3, 4] after 9" in result.stdout


def test_a_script_without_main_guard_runs_once_and_exits(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            '''
            from dagrun import flow, task

            @task
            def hello(name):
                return f"hello {name}"

            @flow
            def greet(name: str = "world"):
                return hello(name)

            print("RESULT", greet())
            '''
        )
    )
    result = run_script(script, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("RESULT hello world") == 1  # worker re-imports do not run it
    assert result.stderr.count("Beginning flow run") == 1


SPLICING_SCRIPT = textwrap.dedent(
    '''
    from dagrun import flow, task

    @task
    def chatter(name: str) -> None:
        for line in range(3000):
            print(f"{name} says line {line}")

    @flow
    def chatty():
        left, right = chatter.submit("left"), chatter.submit("right")
        left.wait(), right.wait()

    if __name__ == "__main__":
        chatty()
    '''
)


def test_tasks_printing_at_once_on_two_workers_never_splice_their_lines(tmp_path):
    """Worker processes share the script's stdout: each printed line arrives whole."""
    script = tmp_path / "chatty.py"
    script.write_text(SPLICING_SCRIPT)
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "says" in line]
    expected = {f"{name} says line {n}" for name in ("left", "right") for n in range(3000)}
    assert set(lines) == expected and len(lines) == 6000, [line for line in lines if line not in expected][:5]
