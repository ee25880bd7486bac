"""The run-history database damaged or deleted, with real runs of the real CLI on real files.

Damaged (`database disk image is malformed`, or not a database at all): every `dagrun` command
says so in one line naming the file and what to do, exit 2, and the dashboard's API answers
with a JSON error. Deleted while a run records into it: the run warns once and is recorded,
whole, into the new database."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

DAGRUN = shutil.which("dagrun")

FLOWS = textwrap.dedent(
    """
    from dagrun import flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(name="pipeline")
    def pipeline(x: int = 1):
        return double(x)
    """
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert DAGRUN, "the dagrun console script is not installed"
    return subprocess.run([DAGRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def damage_pages(database: Path, *tables: str) -> None:
    """Overwrite the first b-tree page of each table (the schema stays readable)."""
    with sqlite3.connect(database) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        pages = [
            connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
            for table in tables
        ]
    connection.close()  # the last connection checkpoints the WAL into the file
    with open(database, "r+b") as file:
        for page in pages:
            file.seek((page - 1) * page_size + 8)
            file.write(b"\xde\xad\xbe\xef" * (page_size // 8))


def damaged_line(database: Path, error: str) -> str:
    return (
        f"The run history is damaged: SQLite database {database}: {error}; move it aside "
        f"(mv {database} {database}.damaged) and dagrun starts a new one; "
        f"`sqlite3 {database} .recover` may save its runs"
    )


@pytest.fixture
def recorded(tmp_path: Path, dagrun_home: Path) -> Path:
    """The history database of a real run of `dagrun run`."""
    (tmp_path / "flows.py").write_text(FLOWS)
    result = cli("run", "flows.py:pipeline", "-p", "x=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return dagrun_home / "dagrun.db"


def test_listing_commands_on_a_malformed_database_print_one_line_and_exit_2(
    tmp_path: Path, recorded: Path
) -> None:
    run_id = json.loads(cli("runs", "ls", "--json", cwd=tmp_path).stdout)[0]["id"]
    damage_pages(recorded, "flow_runs", "flow_runs_by_start_time", "task_runs")
    expected = "Error: " + damaged_line(recorded, "database disk image is malformed")
    for command in (("runs", "ls"), ("runs", "ls", "--json"), ("flows", "ls"), ("runs", "show", run_id)):
        result = cli(*command, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (2, ""), (command, result.stderr)
        assert result.stderr.splitlines() == [expected], command

    # What the line says to do works: a new, empty history.
    recorded.rename(recorded.with_name("dagrun.db.damaged"))
    fresh = cli("runs", "ls", "--json", cwd=tmp_path)
    assert fresh.returncode == 0 and json.loads(fresh.stdout) == [], fresh.stderr


def test_a_file_that_is_not_a_database_is_one_line_too(tmp_path: Path, recorded: Path) -> None:
    with open(recorded, "r+b") as file:
        file.write(b"this is no SQLite file" * 10)
    result = cli("runs", "ls", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == ["Error: " + damaged_line(recorded, "file is not a database")]


def test_the_api_answers_a_json_error_on_a_malformed_database(tmp_path: Path, recorded: Path) -> None:
    damage_pages(recorded, "flow_runs", "flow_runs_by_start_time")
    assert DAGRUN, "the dagrun console script is not installed"
    server = subprocess.Popen(
        [DAGRUN, "server", "--port", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        match = re.match(r"dagrun server: (http://127\.0\.0\.1:\d+)/", server.stdout.readline())
        assert match, server.stderr.read() if server.stderr else ""
        for path in ("/api/runs", "/api/flows"):
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(match.group(1) + path, timeout=30)
            assert answer.value.code == 500
            assert answer.value.headers["Content-Type"].startswith("application/json")
            assert json.loads(answer.value.read()) == {
                "error": damaged_line(recorded, "database disk image is malformed")
            }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    stderr = server.stderr.read() if server.stderr else ""
    assert "Traceback" not in stderr, stderr


# --- the database deleted while a run records into it -------------------------------------------

WAITING_FLOWS = textwrap.dedent(
    """
    import time
    from pathlib import Path
    from dagrun import flow, get_run_logger, task

    @task
    def wait_for_go(folder: str) -> str:
        get_run_logger().info("waiting for go")
        Path(folder, "started").write_text("")
        deadline = time.monotonic() + 120
        while not Path(folder, "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never said go")
            time.sleep(0.05)
        return "went"

    @task
    def after(value: str) -> str:
        get_run_logger().info("after %s", value)
        return value.upper()

    @flow(name="interrupted")
    def interrupted(folder: str):
        return after(wait_for_go(folder))
    """
)


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def logged(database: Path, text: str) -> bool:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT 1 FROM logs WHERE message = ?", (text,)).fetchone() is not None
    except sqlite3.OperationalError:
        return False  # not created yet
    finally:
        connection.close()


@pytest.mark.parametrize("deleted", ["database file only", "database files", "whole home"])
def test_a_run_whose_database_is_deleted_is_recorded_into_the_new_one(
    tmp_path: Path, dagrun_home: Path, deleted: str
) -> None:
    assert DAGRUN, "the dagrun console script is not installed"
    (tmp_path / "flows.py").write_text(WAITING_FLOWS)
    database = dagrun_home / "dagrun.db"
    # A dashboard open on the database all along moves on to the new one.
    server = subprocess.Popen(
        [DAGRUN, "server", "--port", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    run = subprocess.Popen(
        [DAGRUN, "run", "flows.py:interrupted", "-p", f"folder={tmp_path}"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        match = re.match(r"dagrun server: (http://127\.0\.0\.1:\d+)/", server.stdout.readline())
        assert match, server.stderr.read() if server.stderr else ""
        wait_for(lambda: (tmp_path / "started").exists(), "the task to start")
        wait_for(lambda: logged(database, "waiting for go"), "the task's log line to be recorded")
        if deleted == "whole home":
            shutil.rmtree(dagrun_home)
        elif deleted == "database file only":  # its -wal and -shm files left behind
            database.unlink()
        else:
            for name in ("dagrun.db", "dagrun.db-wal", "dagrun.db-shm"):
                (dagrun_home / name).unlink(missing_ok=True)
        (tmp_path / "go").write_text("")
        _, stderr = run.communicate(timeout=120)
        with urllib.request.urlopen(match.group(1) + "/api/runs", timeout=30) as answer:
            served = json.loads(answer.read())
    finally:
        for process in (run, server):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    server_stderr = server.stderr.read() if server.stderr else ""
    assert [(r["flow_name"], r["state"]) for r in served] == [("interrupted", "Completed")], server_stderr
    followed = f"The run history, SQLite database {database}, was deleted: using the new one"
    assert server_stderr.splitlines().count(followed) == 1 and "Traceback" not in server_stderr
    assert run.returncode == 0, stderr
    warning = (
        f"The run history, SQLite database {database}, was deleted while this process was recording "
        "runs in it: recording into a new one there, with its 1 unfinished run(s) copied over"
    )
    assert [line for line in stderr.splitlines() if "deleted" in line] == [warning]

    (recorded,) = json.loads(cli("runs", "ls", "--json", cwd=tmp_path).stdout)
    assert recorded["flow_name"] == "interrupted" and recorded["state"] == "Completed"
    shown = json.loads(cli("runs", "show", recorded["id"], "--json", cwd=tmp_path).stdout)
    assert sorted((task["task_name"], task["state"]) for task in shown["task_runs"]) == [
        ("after", "Completed"), ("wait_for_go", "Completed")
    ]
    logs = cli("runs", "logs", recorded["id"], cwd=tmp_path).stdout
    assert "waiting for go" in logs and "after went" in logs  # before and after the deletion
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(dagrun_home.stat().st_mode) == 0o700
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    connection.close()
