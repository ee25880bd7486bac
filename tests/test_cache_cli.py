"""`dagrun cache ls | info | clear | explain` as a user runs them: a real subprocess against a
real result store under DAGRUN_HOME (set per test by conftest)."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from console_script import DAGRUN

FLOWS = textwrap.dedent(
    '''
    from dagrun import flow, task
    from dagrun.executors import InProcessExecutor

    @task(cache=True)
    def extract(day: str) -> list:
        return [1, 2, None, 4]

    @task(cache=True, cache_expiration=3600)
    def transform(raw: list) -> list:
        return [x for x in raw if x is not None]

    @task(cache=True)
    def load(clean: list) -> int:
        return sum(clean)

    @task
    def notify(total: int) -> str:
        return f"total {total}"

    @task(cache=True)
    def square(x: int) -> int:
        return x * x

    @flow(name="etl", executor=InProcessExecutor())
    def etl(day: str = "2026-11-25"):
        total = load(transform(extract(day)))
        notify(total)
        return total

    @flow(name="squares", executor=InProcessExecutor())
    def squares(n: int = 20):
        return square.map(range(n))
    '''
)


def dagrun(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DAGRUN, *args], cwd=cwd, input=input, capture_output=True, text=True,
        timeout=300, check=False,
    )


def ok(*args: str, cwd: Path, input: str | None = None) -> str:
    result = dagrun(*args, cwd=cwd, input=input)
    assert result.returncode == 0, result.stderr
    return result.stdout


def entries(cwd: Path, *args: str) -> list[dict]:
    return json.loads(ok("cache", "ls", "--json", *args, cwd=cwd))


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    """A flow file in tmp_path whose two flows have run once: 3 + 20 entries in the store."""
    (tmp_path / "flows.py").write_text(FLOWS)
    ok("run", "flows.py:etl", cwd=tmp_path)
    ok("run", "flows.py:squares", cwd=tmp_path)
    return tmp_path


def test_ls_shows_key_task_size_created_expires_and_serializer(populated):
    table = ok("cache", "ls", "--task", "transform", cwd=populated).splitlines()
    assert table[0].split() == ["KEY", "TASK", "SIZE", "CREATED", "EXPIRES", "SERIALIZER"]
    assert len(table) == 2
    row = table[1]
    assert re.match(r"[0-9a-f]{16}  transform  \d+ B +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \d{4}-\d\d-\d\d ", row)
    assert row.endswith("msgpack")

    listed = entries(populated)
    assert sorted({entry["task"] for entry in listed}) == ["extract", "load", "square", "transform"]
    assert len(listed) == 23
    (load,) = (entry for entry in listed if entry["task"] == "load")
    assert re.fullmatch(r"[0-9a-f]{64}", load["key"]) and load["expires"] is None and load["size"] > 0
    (transform,) = (entry for entry in listed if entry["task"] == "transform")
    assert 3590 < transform["expires"] - transform["created"] <= 3600  # cache_expiration=3600
    assert [entry["created"] for entry in listed] == sorted((e["created"] for e in listed), reverse=True)
    assert "never" in ok("cache", "ls", "--task", "load", cwd=populated)


def test_info_accepts_a_unique_key_prefix_and_rejects_an_ambiguous_one(populated):
    (load,) = entries(populated, "--task", "load")
    shown = ok("cache", "info", load["key"][:10], cwd=populated)
    assert f"Key:        {load['key']}\n" in shown
    assert "Task:       load\n" in shown and "Serializer: msgpack\n" in shown and "Expires:    never\n" in shown
    assert f"Checksum:   {load['checksum']}\n" in shown
    assert json.loads(ok("cache", "info", load["key"], "--json", cwd=populated)) == load

    keys = [entry["key"] for entry in entries(populated)]
    shared = next(k[0] for k in keys if sum(other.startswith(k[0]) for other in keys) > 1)  # 23 keys, 16 digits
    ambiguous = dagrun("cache", "info", shared, cwd=populated)
    assert ambiguous.returncode == 2
    assert re.fullmatch(rf"Error: Key prefix {shared} matches \d+ entries \(.*\): give more digits\n", ambiguous.stderr)
    absent = next(p for p in (f"{n:06x}" for n in range(4096)) if not any(k.startswith(p) for k in keys))
    missing = dagrun("cache", "info", absent, cwd=populated)
    assert missing.returncode == 2 and missing.stderr.startswith(f"Error: No cache entry with key {absent} ")
    assert missing.stderr.count("\n") == 1


def test_clear_by_task_and_age_and_asks_unless_yes(populated):
    declined = dagrun("cache", "clear", "--task", "square", cwd=populated, input="n\n")
    assert declined.returncode == 1 and "Remove 20 cache entries of task 'square'" in declined.stdout
    assert len(entries(populated)) == 23

    assert ok("cache", "clear", "--task", "square", "--yes", cwd=populated) == "Removed 20 cache entries.\n"
    assert sorted(e["task"] for e in entries(populated)) == ["extract", "load", "transform"]
    assert ok("cache", "clear", "--older-than", "7d", "--yes", cwd=populated) == "Removed 0 cache entries.\n"
    assert ok("cache", "clear", "--older-than", "0s", cwd=populated, input="y\n").endswith(
        "Removed 3 cache entries.\n"
    )
    assert entries(populated) == []


@pytest.mark.parametrize("duration", ["7x", "d7", "12 hours", "-1h"])
def test_clear_with_a_bad_duration_is_one_error_line_naming_the_option(populated, duration):
    result = dagrun("cache", "clear", "--older-than", duration, "--yes", cwd=populated)
    assert result.returncode == 2
    assert result.stderr == (
        f"Error: Invalid --older-than {duration!r}: give a number and a unit (s, m, h, d, w), "
        "like 7d, 12h, 30m or 90s\n"
    )
    assert len(entries(populated)) == 23  # nothing removed


def explain(cwd: Path, *args: str) -> dict[str, str]:
    """{task run name: the rest of its line} from `dagrun cache explain`."""
    lines = ok("cache", "explain", "flows.py:etl", *args, cwd=cwd).splitlines()
    assert all(re.fullmatch(r"\S+ +(hit   \(key [0-9a-f]{12}\.\.\.\)|miss  .+)", line) for line in lines), lines
    return {line.split()[0]: line.split(None, 1)[1] for line in lines}


def test_explain_says_hit_or_miss_and_why_for_each_cached_task_run(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    assert explain(tmp_path) == {
        "extract-0": "miss  no entry", "transform-0": "miss  no entry", "load-0": "miss  no entry",
    }  # the uncached notify-0 is not listed
    hits = explain(tmp_path)
    assert all(line.startswith("hit   (key ") for line in hits.values()) and len(hits) == 3

    source = tmp_path / "flows.py"
    source.write_text(FLOWS.replace("return [x for x in raw if x is not None]", "return [x * 2 for x in raw if x]"))
    assert explain(tmp_path) == {
        "extract-0": hits["extract-0"], "transform-0": "miss  code changed", "load-0": "miss  upstream 'clean' changed",
    }
    changed = explain(tmp_path, "--param", "day=2026-12-01")
    assert changed["extract-0"] == "miss  argument 'day' changed"
    assert changed["transform-0"].startswith("hit") and changed["load-0"].startswith("hit")  # same data in

def test_explain_help_says_it_runs_the_flow(tmp_path):
    shown = ok("cache", "explain", "--help", cwd=tmp_path)
    assert "RUNS the flow" in shown and "dynamic flow" in shown
