"""A failed task's traceback points at the user's code: `dagrun run` on the default local
cluster, then the traceback as the history, `dagrun runs show` and the terminal show it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

FLOW = textwrap.dedent(
    '''
    from dagrun import flow, get_run_logger, task


    def check(value):
        if value > 1:
            raise ValueError(f"value {value} is too large")
        return value


    @task(retries=1, retry_delay_seconds=0)
    def scale(value):
        return check(value) * 10


    @flow
    def scaling():
        return scale(5)


    @task
    def lookup(table):
        try:
            return table["missing"]
        except KeyError:
            get_run_logger().exception("lookup failed")
            return None


    @flow
    def logging_lookup():
        return lookup({})


    @flow
    def checking():
        return check(3)
    '''
)


@dataclass(frozen=True)
class FailedRun:
    file: Path
    home: Path
    output: str  # stdout and stderr of `dagrun run`
    run: dict  # `dagrun runs show ID --json`


def dagrun(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    executable = shutil.which("dagrun")
    assert executable, "the dagrun console script is not installed"
    env = {**os.environ, "DAGRUN_HOME": str(home)}
    env.pop("DAGRUN_CLUSTER", None)
    return subprocess.run([executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> FailedRun:
    """One run of a flow whose task fails in a helper function, on the default local cluster."""
    directory = tmp_path_factory.mktemp("tracebacks")
    file = directory / "scaling.py"
    file.write_text(FLOW)
    home = directory / "dagrun-home"
    result = dagrun("run", f"{file}:scaling", home=home, cwd=directory)
    assert result.returncode == 1, result.stdout + result.stderr
    listed = dagrun("runs", "ls", "--json", home=home, cwd=directory)
    run_id = json.loads(listed.stdout)[0]["id"]
    shown = dagrun("runs", "show", run_id, "--json", home=home, cwd=directory)
    return FailedRun(file, home, result.stdout + result.stderr, json.loads(shown.stdout))


def user_frames(file: Path) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "{file}", line 13, in scale\n'
        "    return check(value) * 10\n"
        f'  File "{file}", line 7, in check\n'
        '    raise ValueError(f"value {value} is too large")\n'
        "ValueError: value 5 is too large"
    )


def test_stored_task_traceback_starts_with_the_users_frames_and_source_lines(failed_run):
    [task_run] = failed_run.run["task_runs"]
    assert task_run["traceback"].startswith(user_frames(failed_run.file))


def test_user_view_hides_dagrun_and_dask_frames(failed_run):
    [task_run] = failed_run.run["task_runs"]
    for traceback in (task_run["traceback"], failed_run.run["traceback"]):
        assert "distributed" + os.sep not in traceback
        assert "dagrun" + os.sep not in traceback
        assert "<dynamic-code>" not in traceback


def test_full_traceback_keeps_dask_and_dagrun_frames_then_the_users(failed_run):
    [task_run] = failed_run.run["task_runs"]
    full = task_run["full_traceback"]
    assert "distributed" + os.sep in full
    assert "dagrun" + os.sep + "runner.py" in full
    user_part = user_frames(failed_run.file).split("\n", 1)[1]  # without the header
    assert user_part in full
    assert full.index("dagrun" + os.sep + "runner.py") < full.index(str(failed_run.file))


def test_each_attempt_stores_both_views(failed_run):
    from dagrun.history import HistoryStore

    [task_run] = failed_run.run["task_runs"]
    with HistoryStore(failed_run.home / "dagrun.db") as store:
        attempts = store.get_task_run(task_run["id"])["attempt_history"]
    assert [attempt["attempt"] for attempt in attempts] == [1, 2]
    for attempt in attempts:
        assert attempt["traceback"].startswith(user_frames(failed_run.file))
        assert "distributed" + os.sep in attempt["full_traceback"]


def test_flow_run_traceback_is_the_failed_tasks_user_view(failed_run):
    assert failed_run.run["traceback"].startswith(user_frames(failed_run.file))
    assert "distributed" + os.sep in failed_run.run["full_traceback"]


def test_terminal_shows_the_failure_once_without_compute_failed(failed_run):
    output = failed_run.output
    assert "Compute Failed" not in output
    assert output.count("Traceback (most recent call last)") == 1
    assert output.count('raise ValueError(f"value {value} is too large")') == 1
    assert output.count("\nValueError: value 5 is too large\n") == 1
    assert user_frames(failed_run.file) in output


def test_runs_show_prints_the_user_view(failed_run):
    shown = dagrun("runs", "show", failed_run.run["id"], home=failed_run.home, cwd=failed_run.file.parent)
    assert shown.returncode == 0, shown.stderr
    assert user_frames(failed_run.file) in shown.stdout
    assert "distributed" + os.sep not in shown.stdout


def test_runs_show_full_traceback_adds_dask_and_dagrun_frames(failed_run):
    shown = dagrun(
        "runs", "show", failed_run.run["id"], "--full-traceback", home=failed_run.home, cwd=failed_run.file.parent
    )
    assert shown.returncode == 0, shown.stderr
    assert "distributed" + os.sep in shown.stdout
    assert user_frames(failed_run.file).split("\n", 1)[1] in shown.stdout


def test_source_lines_a_worker_could_not_read_are_filled_in_from_the_drivers_file(tmp_path):
    from dagrun.tracebacks import capture, views_of
    from dagrun.user_files import import_file

    file = tmp_path / "remote_flow.py"
    file.write_text(FLOW)
    module = import_file(file)
    hidden = file.rename(tmp_path / "elsewhere.py")  # as on a worker without the user's file
    try:
        module.scale.fn(5)
    except ValueError as error:
        captured = capture(error)
        failure = error
    assert f'File "{file}", line 7, in check\nValueError' in captured.user  # no source line
    hidden.rename(file)
    frames = user_frames(file).split("\n", 1)[1]  # this test's own frame comes first
    assert views_of(failure).user.endswith(frames)
    assert views_of(failure).full.endswith(frames)


def test_logger_exception_in_a_task_shows_real_file_names(tmp_path):
    file = tmp_path / "lookups.py"
    file.write_text(FLOW)
    result = dagrun("run", f"{file}:logging_lookup", home=tmp_path / "dagrun-home", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f'File "{file}", line 24, in lookup\n    return table["missing"]\nKeyError: \'missing\'' in result.stderr
    assert "<dynamic-code>" not in result.stderr


def test_a_flow_body_failure_prints_the_users_traceback_once(tmp_path):
    file = tmp_path / "checks.py"
    file.write_text(FLOW)
    result = dagrun("run", f"{file}:checking", home=tmp_path / "dagrun-home", cwd=tmp_path)
    assert result.returncode == 1
    frames = (
        f'  File "{file}", line 37, in checking\n    return check(3)\n'
        f'  File "{file}", line 7, in check\n    raise ValueError(f"value {{value}} is too large")\n'
        "ValueError: value 3 is too large"
    )
    assert result.stderr.count(frames) == 1
    assert "dagrun" + os.sep not in result.stderr


def test_a_script_shows_the_users_frames_once_and_no_rebuilt_worker_frames(tmp_path):
    file = tmp_path / "script.py"
    file.write_text(FLOW + "\n\nif __name__ == '__main__':\n    scaling()\n")
    env = {**os.environ, "DAGRUN_HOME": str(tmp_path / "dagrun-home")}
    env.pop("DAGRUN_CLUSTER", None)
    result = subprocess.run(
        [sys.executable, str(file)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 1
    assert result.stderr.count(user_frames(file)) == 1  # the task's failure line
    assert "<dynamic-code>" not in result.stderr
    assert "distributed" + os.sep not in result.stderr
    # Python's own print of the uncaught error: the script's frames down to dagrun, then the error.
    assert re.search(r"\nValueError: value 5 is too large\nraised by task run 'scale-0' in flow run '[^']+'$",
                     result.stderr.rstrip())


def test_a_threaded_local_cluster_does_not_log_compute_failed():
    import logging

    from dagrun import flow, task
    from dagrun.executors.dask import DaskExecutor

    @task
    def explode():
        raise ValueError("threaded boom")

    kwargs = {"processes": False, "protocol": "tcp", "n_workers": 1, "threads_per_worker": 1}

    @flow(executor=DaskExecutor(cluster_kwargs=kwargs))
    def threaded():
        return explode()

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    worker_logger = logging.getLogger("distributed.worker")  # the workers run in this process
    records = Records()
    worker_logger.addHandler(records)
    try:
        assert threaded(return_state=True).is_failed()
    finally:
        worker_logger.removeHandler(records)
    assert [m for m in records.messages if "Compute Failed" in m] == []
