"""The run history moves while a run goes: a real `dagrun run` process, read from another
process (`dagrun runs show --json`) as a user watching it would, on the default local cluster
and on the in-process executor. And one time base: a worker whose clock is an hour ahead
never puts a task outside its flow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from console_script import DAGRUN, dagrun
from dagrun.history import FlowRunStarted, HistoryStore, TaskRunCreated, TaskRunState
from dagrun.live_history import LiveTaskRuns
from dagrun.states import StateType
from dagrun.task_events import AttemptFailed, TaskRunFinished, TaskRunStarted, decode, encode

LIVE_FLOW = textwrap.dedent(
    '''
    import os
    import time
    from pathlib import Path

    from dagrun import flow, task
    from dagrun.executors import InProcessExecutor

    WORK = Path(os.environ["LIVE_DIR"])


    @task
    def quick():
        return 1


    @task(retries=1, retry_delay_seconds=0)
    def flaky():
        if not (WORK / "flaky-failed").exists():
            (WORK / "flaky-failed").write_text("once")
            raise ConnectionError("first attempt fails")
        return 2


    @task
    def waiter():
        (WORK / "started").write_text(repr(time.time()))
        while not (WORK / "release").exists():
            time.sleep(0.02)
        return 3


    @flow(name="live", executor=InProcessExecutor() if os.environ.get("LIVE_EXECUTOR") == "in_process" else None)
    def live():
        done, retried = quick(), flaky()
        waited = waiter().result()  # the body blocks here while `quick` is long done
        return [done.result(), retried.result(), waited]
    '''
)

SKEWED_FLOW = textwrap.dedent(
    '''
    import time
    from pathlib import Path

    from dagrun import flow, task


    @task
    def clock(path: str):
        Path(path).write_text(repr(time.time()))  # the worker's clock, as the task sees it
        time.sleep(0.3)
        return 1


    @task
    def add(a, b):
        time.sleep(0.3)
        return a + b


    @flow(name="skewed")
    def skewed(marker: str):
        return add(clock(marker), clock(marker + "-2"))
    '''
)

# Loaded into each worker process of the local cluster (`distributed.worker.preload`): the
# worker's wall clock runs an hour ahead of the driver's, as on a badly synchronised cluster.
SKEW_PRELOAD = textwrap.dedent(
    '''
    import time

    SKEW = 3600.0
    _real_time = time.time


    def dask_setup(worker):
        time.time = lambda: _real_time() + SKEW
    '''
)


@pytest.fixture
def live_run(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`dagrun run flow.py:live` going in the background; stopped (its group) if a test fails."""
    (tmp_path / "flow.py").write_text(LIVE_FLOW)
    env = {**os.environ, "LIVE_DIR": str(tmp_path), "LIVE_EXECUTOR": request.param}
    process = subprocess.Popen(
        [*DAGRUN, "run", "flow.py:live"], cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield process, tmp_path
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def show(run_id: str) -> dict:
    result = dagrun("runs", "show", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path.name} not written within {timeout} s"
        time.sleep(0.02)


def the_run_id(flow_name: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = json.loads(dagrun("runs", "ls", "--json").stdout)
        if listed:
            assert [run["flow_name"] for run in listed] == [flow_name]
            return listed[0]["id"]
    raise AssertionError(f"no run of {flow_name!r} in the history within {timeout} s")


@pytest.mark.parametrize("live_run", ["dask", "in_process"], indirect=True)
def test_a_running_task_and_a_finished_one_are_seen_while_the_flow_is_blocked(live_run):
    process, work = live_run
    wait_for_file(work / "started", process)
    started = float((work / "started").read_text())  # same machine, same clock as ours
    run_id = the_run_id("live")

    # Every look from 1 s after the task started on must show it Running (earlier ones may not
    # yet): poll with a deadline, judging each answer by when it was asked for.
    deadline = time.monotonic() + 60
    while True:
        asked = time.time()
        run = show(run_id)
        tasks = {t["task_run_name"]: t for t in run["task_runs"]}
        if asked >= started + 1.0:
            break
        assert time.monotonic() < deadline
    assert run["state"] == "Running"  # the flow body is still blocked on `waiter`
    waiter = tasks["waiter-0"]
    assert waiter["state"] == "Running", tasks
    assert waiter["worker"] and waiter["attempts"] == 1, waiter
    assert run["start_time"] <= waiter["start_time"] <= started, (run["start_time"], waiter, started)
    assert waiter["end_time"] is None
    # Never looked at by the flow body yet, `quick` is recorded Completed as soon as it ended.
    quick = tasks["quick-0"]
    assert quick["state"] == "Completed" and quick["worker"], quick
    assert run["start_time"] <= quick["start_time"] <= quick["end_time"] <= asked, quick

    (work / "release").write_text("go")
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 0, stderr

    run = show(run_id)
    assert run["state"] == "Completed"
    tasks = {t["task_run_name"]: t for t in run["task_runs"]}
    states = {name: t["state"] for name, t in tasks.items()}
    assert states == dict.fromkeys(["quick-0", "flaky-0", "waiter-0"], "Completed")
    for task_run in tasks.values():
        assert task_run["worker"], task_run
        assert run["start_time"] <= task_run["start_time"] <= task_run["end_time"] <= run["end_time"], (run, task_run)
    assert tasks["flaky-0"]["attempts"] == 2
    assert tasks["waiter-0"]["end_time"] >= started
    with HistoryStore.from_env() as store:
        attempts = {name: store.get_task_run(t["id"])["attempt_history"] for name, t in tasks.items()}
    for name, history in attempts.items():
        assert [a["attempt"] for a in history] == list(range(1, tasks[name]["attempts"] + 1)), attempts
        for attempt in history:  # every attempt, also the retried task's last, has its times
            assert run["start_time"] <= attempt["start_time"] <= attempt["end_time"] <= run["end_time"], (name, attempt)
    first, last = attempts["flaky-0"]
    assert "ConnectionError: first attempt fails" in first["error"] and last["error"] is None
    assert first["end_time"] <= last["start_time"]


def test_a_worker_clock_an_hour_ahead_never_puts_a_task_outside_its_flow_run(tmp_path):
    (tmp_path / "flow.py").write_text(SKEWED_FLOW)
    (tmp_path / "skew_clock.py").write_text(SKEW_PRELOAD)
    marker = tmp_path / "worker-clock"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(tmp_path / "skew_clock.py")])}
    before = time.time()
    result = subprocess.run(
        [*DAGRUN, "run", "flow.py:skewed", "--param", f"marker={marker}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert float(marker.read_text()) - before > 3000  # the workers' clocks really were skewed

    run = show(the_run_id("skewed"))
    assert run["state"] == "Completed"
    task_runs = sorted(run["task_runs"], key=lambda t: t["start_time"])
    assert [t["task_name"] for t in task_runs] == ["clock", "clock", "add"]
    for task_run in task_runs:
        assert run["start_time"] <= task_run["start_time"] <= task_run["end_time"] <= run["end_time"], (run, task_run)
        assert task_run["end_time"] - task_run["start_time"] >= 0.3
    add = task_runs[-1]
    assert add["start_time"] >= max(t["end_time"] for t in task_runs[:2])  # order kept


class History:
    """A real SQLite history fed through `LiveTaskRuns`, as the recorder feeds it."""

    def __init__(self) -> None:
        self.store = HistoryStore.from_env()
        self.events: list = []
        self.live = LiveTaskRuns(self.events.append)
        self.store.apply([
            FlowRunStarted("flow", "etl", "etl-1", {}, T0, None, None, "DaskExecutor", None, "host", 1),
            FlowRunStarted("other", "etl", "etl-2", {}, T0, None, None, "DaskExecutor", None, "host", 2),
            TaskRunCreated("a", "flow", "extract", "extract-0", (), None, T0),
        ])
        self.live.add_flow_run("flow")

    def write(self) -> None:
        self.store.apply(self.events)
        self.events.clear()

    def task_run(self) -> dict:
        self.write()
        run = self.store.get_task_run("a")
        run["states"] = [s["state"] for s in run.pop("state_history")]
        return run


T0 = 1_800_000_000.0
WORKER = "tcp://10.0.0.7:40001"


def test_a_worker_report_after_the_engines_final_state_fills_in_fields_and_adds_no_state():
    history = History()
    history.live.engine_state("a", StateType.COMPLETED, lambda: TaskRunState("a", "Completed", T0 + 9, attempt=1))
    history.live.worker_events([
        TaskRunStarted("flow", "a", 1, T0 + 1, WORKER),
        TaskRunFinished("flow", "a", 1, T0 + 1, T0 + 1, T0 + 2, worker=WORKER),
    ])
    run = history.task_run()
    assert run["states"] == ["Pending", "Completed"]
    assert (run["worker"], run["start_time"], run["end_time"]) == (WORKER, T0 + 1, T0 + 2)  # the worker's end
    assert not history.live.awaiting_workers()


def test_the_engines_state_after_the_workers_same_final_state_writes_nothing_more():
    history = History()
    history.live.worker_events([TaskRunStarted("flow", "a", 1, T0 + 1, WORKER)])
    assert history.task_run()["states"] == ["Pending", "Running"]
    history.live.worker_events([
        AttemptFailed(
            "flow", "a", 1, T0 + 1, T0 + 1, T0 + 2, "OSError: disk", "Traceback ...", "Traceback (full) ...",
            retrying=False, worker=WORKER,
        ),
    ])
    history.live.engine_state("a", StateType.FAILED, lambda: TaskRunState(
        "a", "Failed", T0 + 5, "OSError: disk", attempt=1, error="OSError: disk", traceback="Traceback ... (note)",
        full_traceback="Traceback (full) ... (note)",
    ))
    run = history.task_run()
    assert run["states"] == ["Pending", "Running", "Failed"]
    assert (run["start_time"], run["end_time"], run["worker"]) == (T0 + 1, T0 + 2, WORKER)
    assert run["traceback"] == "Traceback ... (note)"  # the engine's fuller error wins
    assert run["full_traceback"] == "Traceback (full) ... (note)"
    assert [(a["start_time"], a["end_time"]) for a in run["attempt_history"]] == [(T0 + 1, T0 + 2)]


def test_a_batch_that_starts_and_ends_attempts_writes_only_their_ends_and_ignores_other_flow_runs():
    history = History()
    history.live.worker_events([
        TaskRunStarted("other", "a", 1, T0 + 1, WORKER),  # another driver's run on the same cluster
        TaskRunStarted("flow", "a", 1, T0 + 1, WORKER),
        AttemptFailed("flow", "a", 1, T0 + 1, T0 + 1, T0 + 2, "ValueError: x", "tb", "tb", True, "Retry", WORKER),
        TaskRunStarted("flow", "a", 2, T0 + 3, WORKER),
        TaskRunFinished("flow", "a", 2, T0 + 1, T0 + 3, T0 + 4, worker=WORKER),
    ])
    history.live.engine_state("a", StateType.COMPLETED, lambda: TaskRunState("a", "Completed", T0 + 5, attempt=1))
    run = history.task_run()
    assert run["states"] == ["Pending", "Retrying", "Completed"]
    assert (run["attempts"], run["start_time"], run["end_time"]) == (2, T0 + 1, T0 + 4)
    assert [(a["attempt"], a["start_time"], a["end_time"], a["error"]) for a in run["attempt_history"]] == [
        (1, T0 + 1, T0 + 2, "ValueError: x"), (2, T0 + 3, T0 + 4, None),
    ]


def test_task_events_survive_the_wire_and_move_to_the_receivers_clock():
    finished = TaskRunFinished("flow", "a", 2, T0 + 1, T0 + 3, T0 + 4, "key", 10, "sum")
    failed = AttemptFailed("flow", "a", 1, T0 + 1, T0 + 1, T0 + 2, "E: x", "tb", "full tb", True, "Retry")
    for event in (TaskRunStarted("flow", "a", 1, T0), finished, failed):
        wire = msgpack.unpackb(msgpack.packb(encode(event)), raw=False)
        assert decode(wire, WORKER, 0.0) == event._replace(worker=WORKER)
    moved = decode(encode(finished), WORKER, 3600.0)
    assert (moved.run_start_time, moved.start_time, moved.end_time) == (T0 + 1 - 3600, T0 + 3 - 3600, T0 + 4 - 3600)


def test_a_lost_workers_late_reports_never_reopen_a_run_that_ran_again_elsewhere():
    history = History()
    lost, other = WORKER, "tcp://10.0.0.8:40002"
    history.live.worker_events([TaskRunStarted("flow", "a", 1, T0 + 1, lost)])
    history.live.attempt_lost("a", "KilledWorker: its worker died")
    history.live.worker_events([  # the next worker counts from 1 again
        TaskRunStarted("flow", "a", 1, T0 + 3, other),
        TaskRunFinished("flow", "a", 1, T0 + 3, T0 + 3, T0 + 4, worker=other),
    ])
    history.live.engine_state("a", StateType.COMPLETED, lambda: TaskRunState("a", "Completed", T0 + 5, attempt=1))
    history.live.worker_events([  # the frozen worker wakes up and sends what it held
        TaskRunStarted("flow", "a", 1, T0 + 1, lost),
        TaskRunFinished("flow", "a", 1, T0 + 1, T0 + 1, T0 + 6, worker=lost),
        TaskRunStarted("flow", "a", 1, T0 + 2, "tcp://10.0.0.9:40003"),  # started before the end: stale
    ])
    run = history.task_run()
    assert run["states"] == ["Pending", "Running", "Retrying", "Completed"]
    assert (run["state"], run["worker"], run["attempts"], run["end_time"]) == ("Completed", other, 2, T0 + 4)
    assert [(a["attempt"], a["start_time"], a["end_time"]) for a in run["attempt_history"]] == [
        (1, T0 + 1, run["attempt_history"][0]["end_time"]), (2, T0 + 3, T0 + 4),
    ]
    assert "KilledWorker" in run["attempt_history"][0]["error"]
