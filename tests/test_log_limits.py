"""A chatty task cannot flood the driver: each task run attempt's log is capped on the worker
(DAGRUN_LOG_CAP_BYTES), keeping its head and its tail and one line saying what was dropped;
the terminal and the run history get the same bounded log. Small logs pass unchanged."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dagrun import flow, get_run_logger, task
from dagrun.history import HistoryStore
from dagrun.log_cap import LINE_OVERHEAD

DAGRUN = Path(sys.executable).parent / "dagrun"
DROPPED = re.compile(r"^\.\.\. ([\d,]+) lines \(([\d,]+) bytes\) dropped: a task run attempt's log is capped at ([\d,]+) bytes")
CAP = 20_000
LINE_LENGTH = 60

FLOWS = textwrap.dedent(
    f'''
    from dagrun import flow, task

    @task(log_prints=True)
    def chatty(n: int) -> int:
        for i in range(n):
            print(f"line {{i:06d}} " + "x" * {LINE_LENGTH - 12})
        return n

    @flow(name="flood")
    def flood(n: int = 5000) -> int:
        return chatty(n)
    '''
)


def numbered(i: int) -> str:
    return f"line {i:06d} " + "x" * (LINE_LENGTH - 12)


def dagrun(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DAGRUN), *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=180
    )


def dropped_counts(message: str) -> tuple[int, int, int] | None:
    match = DROPPED.match(message)
    return None if match is None else tuple(int(group.replace(",", "")) for group in match.groups())


def test_a_flooding_task_keeps_its_head_one_dropped_line_and_its_tail_within_the_cap(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    result = dagrun("run", "flows.py:flood", "--param", "n=5000", cwd=tmp_path, env={"DAGRUN_LOG_CAP_BYTES": str(CAP)})
    assert result.returncode == 0, result.stderr
    assert "Finished in state Completed" in result.stderr

    with HistoryStore.from_env() as store:
        [run] = store.list_flow_runs(flow_name="flood")
        rows = store.get_logs(run["id"], task_name="chatty")
    messages = [row["message"] for row in rows]
    [marker_at] = [i for i, message in enumerate(messages) if dropped_counts(message)]
    head, tail = messages[:marker_at], messages[marker_at + 1:]
    dropped, dropped_bytes, cap = dropped_counts(messages[marker_at])
    assert rows[marker_at]["level"] == logging.WARNING and cap == CAP
    # The head is the first lines, the tail the last ones, and the marker counts the middle.
    assert head == [numbered(i) for i in range(len(head))] and len(head) > 10
    assert tail == [numbered(i) for i in range(5000 - len(tail), 5000)] and len(tail) > 10
    assert len(head) + dropped + len(tail) == 5000
    assert dropped_bytes == dropped * LINE_LENGTH
    assert sum(len(m.encode()) + LINE_OVERHEAD for m in messages) <= CAP

    # The terminal shows the same bounded log, not the flood.
    shown = [line.split(" | chatty-0 - ", 1)[1] for line in result.stderr.splitlines() if " | chatty-0 - " in line]
    assert shown == messages
    assert numbered(2500) not in result.stderr
    assert len(result.stderr.encode()) <= CAP + 2_000


def test_small_logs_pass_unchanged_and_in_order(executor, run_logs):
    @task(log_prints=True)
    def talk(name: str) -> str:
        for i in range(300):
            if i % 2:
                print(f"{name} printed {i}")
            else:
                get_run_logger().info("%s logged %d", name, i)
        return name

    @flow(name="small_logs", executor=executor)
    def pipeline():
        return [talk(name) for name in ("a", "b", "c", "d")]

    assert pipeline() == ["a", "b", "c", "d"]
    for name in "abcd":
        lines = [r.getMessage() for r in run_logs if r.task_run_name == f"talk-{'abcd'.index(name)}"]
        assert lines == [f"{name} {'printed' if i % 2 else 'logged'} {i}" for i in range(300)]
    assert not [r for r in run_logs if dropped_counts(r.getMessage())]
    with HistoryStore.from_env() as store:
        [run] = store.list_flow_runs(flow_name="small_logs")
        assert len(store.get_logs(run["id"], task_name="talk")) == 4 * 300


def test_each_attempt_of_a_retried_task_has_its_own_cap(executor, run_logs, monkeypatch, calls):
    monkeypatch.setenv("DAGRUN_LOG_CAP_BYTES", str(CAP))

    @task(retries=1, log_prints=True)
    def flaky() -> str:
        calls.record("attempt")
        attempt = calls.count("attempt")
        for i in range(2000):
            print(f"attempt {attempt} line {i}")
        if attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    @flow(executor=executor)
    def pipeline():
        return flaky()

    assert pipeline() == "ok"
    lines = [r.getMessage() for r in run_logs if r.task_run_name == "flaky-0"]
    markers = [i for i, line in enumerate(lines) if dropped_counts(line)]
    [retry] = [i for i, line in enumerate(lines) if line.startswith("Retry 1/1 of 'flaky'")]
    assert len(markers) == 2 and markers[0] < retry < markers[1]
    # Attempt 1 ends with its own tail before the retry line; attempt 2 starts from its head.
    assert lines[0] == "attempt 1 line 0" and lines[retry - 1] == "attempt 1 line 1999"
    assert lines[retry + 1] == "attempt 2 line 0" and lines[-1] == "attempt 2 line 1999"
    for start, end in ((0, retry), (retry, len(lines))):
        assert sum(len(line.encode()) + LINE_OVERHEAD for line in lines[start:end]) <= CAP


def test_one_huge_line_is_cut_to_an_eighth_of_the_cap(executor, run_logs, monkeypatch):
    monkeypatch.setenv("DAGRUN_LOG_CAP_BYTES", str(CAP))

    @task(log_prints=True)
    def shout() -> None:
        print("y" * 1_000_000)
        print("after the big line")

    @flow(executor=executor)
    def pipeline():
        shout()

    pipeline()
    lines = [r.getMessage() for r in run_logs if r.task_run_name == "shout-0"]
    assert lines == ["y" * (CAP // 8) + f" ... [{1_000_000 - CAP // 8:,} more characters dropped]", "after the big line"]


@pytest.mark.parametrize("value", ["ten", "100", "-5"])
def test_a_bad_log_cap_is_one_clear_line(tmp_path, value):
    (tmp_path / "flows.py").write_text(FLOWS)
    result = dagrun("run", "flows.py:flood", "--param", "n=1", cwd=tmp_path, env={"DAGRUN_LOG_CAP_BYTES": value})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"Error: DAGRUN_LOG_CAP_BYTES={value!r} is not a valid log cap: give a whole number of bytes "
        "of at least 4096 (e.g. 10000000), or 'off' for no cap"
    )


def test_the_cap_can_be_turned_off(executor, run_logs, monkeypatch):
    monkeypatch.setenv("DAGRUN_LOG_CAP_BYTES", "off")

    @task(log_prints=True)
    def chatty() -> None:
        for i in range(3000):
            print(f"line {i}")

    @flow(executor=executor)
    def pipeline():
        chatty()

    pipeline()
    assert [r.getMessage() for r in run_logs if r.task_run_name == "chatty-0"] == [f"line {i}" for i in range(3000)]
