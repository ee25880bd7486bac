"""A damaged run-history database (`database disk image is malformed`, or not a database at all):
every `dagrun` command says so in one line naming the file and what to do, exit 2, and the
dashboard's API answers with a JSON error. Real runs recorded by the real CLI, a real file
damaged on disk, the real `dagrun server`."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import textwrap
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
