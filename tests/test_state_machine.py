"""One state machine: the transition table itself, the live history's rules for two sources
reporting one run's end, and real runs whose every recorded state sequence the table allows
(on every executor), so an illegal transition anywhere fails a test."""

from __future__ import annotations

import itertools
import logging
import os
import threading

import distributed
import pytest

from dagrun import flow, task
from dagrun.engine import run_flow
from dagrun.executors import DaskExecutor
from dagrun.history import HistoryStore
from dagrun.history import TaskRunState
from dagrun.states import (
    FLOW_RUN_TRANSITIONS,
    TASK_RUN_TRANSITIONS,
    IllegalTransition,
    State,
    StateType,
    check_report,
    transition,
)
from dagrun.task_events import AttemptFailed, TaskRunFinished, TaskRunStarted
from test_live_states import T0, WORKER, History

ALL = list(StateType)
ACTIVE = [state for state in ALL if not state.is_final]


def test_every_state_has_a_row_and_every_pair_in_the_table_is_accepted():
    assert set(TASK_RUN_TRANSITIONS) == set(ALL)
    assert set(FLOW_RUN_TRANSITIONS) == set(ALL) - {StateType.CACHED, StateType.NOT_RUN}  # never a flow's
    for table in (TASK_RUN_TRANSITIONS, FLOW_RUN_TRANSITIONS):
        for current, allowed in table.items():
            for new in allowed:
                moved = State(new)
                assert transition(State(current), moved, run="task run 'a-0'", table=table) is moved


def test_every_pair_outside_the_table_is_refused_naming_the_run_and_both_states():
    for table in (TASK_RUN_TRANSITIONS, FLOW_RUN_TRANSITIONS):
        for current, new in itertools.product(table, ALL):
            if new in table[current] or (new is current and current.is_final):
                continue
            with pytest.raises(IllegalTransition) as raised:
                transition(State(current), State(new), run="flow run 'etl-1'", table=table)
            assert str(raised.value).startswith(
                f"Illegal state transition of flow run 'etl-1': {current.value} -> {new.value} (allowed from"
            ), raised.value


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (StateType.COMPLETED, StateType.FAILED, "Crashed, Running"),
        (StateType.FAILED, StateType.COMPLETED, "none, it is final"),
        (StateType.CANCELLED, StateType.RUNNING, "none, it is final"),
        (StateType.NOT_RUN, StateType.CACHED, "none, it is final"),
        (StateType.CACHED, StateType.COMPLETED, "Running"),
        (StateType.PAUSED, StateType.COMPLETED, "Cancelled, Crashed, Failed, Running"),
    ],
)
def test_a_selection_of_illegal_task_run_moves_is_refused_with_what_is_allowed(current, new, allowed):
    with pytest.raises(IllegalTransition, match=rf"^Illegal state transition of task run 'extract-0': "
                       rf"{current.value} -> {new.value} \(allowed from {current.value}: {allowed}\)$"):
        transition(State(current), State(new), run="task run 'extract-0'")


def test_a_repeated_final_state_is_no_move_and_the_first_one_stands():
    first = State(StateType.CANCELLED, message="Cancelled by `dagrun runs cancel`")
    assert transition(first, State(StateType.CANCELLED, message="Cancelled"), run="r", table=FLOW_RUN_TRANSITIONS) is first
    for state in ALL:
        if state.is_final:
            kept = State(state)
            assert transition(kept, State(state), run="r") is kept


def test_every_unfinished_run_may_crash_or_be_cancelled():
    """What `mark_lost_runs` (Crashed) and a cancel (Cancelled) do to any unfinished run."""
    for table, state in itertools.product((TASK_RUN_TRANSITIONS, FLOW_RUN_TRANSITIONS), ACTIVE):
        assert {StateType.CRASHED, StateType.CANCELLED} <= table[state], state


def test_a_late_worker_report_after_a_final_state_adds_no_state_but_illegal_moves_still_raise():
    assert check_report(StateType.COMPLETED, StateType.FAILED, run="r") is False  # the first end stands
    assert check_report(StateType.CANCELLED, StateType.COMPLETED, run="r") is False
    assert check_report(StateType.COMPLETED, StateType.COMPLETED, run="r") is False
    assert check_report(StateType.COMPLETED, StateType.CRASHED, run="r") is True  # its result was lost
    assert check_report(StateType.RUNNING, StateType.COMPLETED, run="r") is True
    with pytest.raises(IllegalTransition, match="Failed -> Running"):
        check_report(StateType.FAILED, StateType.RUNNING, run="r")


# ---------------------------------------------------------------- real runs, recorded


Key = tuple[str, str | None, str | None]  # flow run name, task run name and id (None: the flow run)


def recorded_sequences() -> dict[Key, list[StateType]]:
    """Every run's recorded states in order, by run."""
    with HistoryStore.from_env() as store, store.read_transaction() as connection:
        rows = connection.execute(
            "SELECT s.state, s.task_run_id, f.flow_run_name, t.task_run_name FROM states s "
            "JOIN flow_runs f ON f.id = s.flow_run_id LEFT JOIN task_runs t ON t.id = s.task_run_id "
            "ORDER BY s.id"
        ).fetchall()
    sequences: dict[Key, list[StateType]] = {}
    for row in rows:
        key = (row["flow_run_name"], row["task_run_name"], row["task_run_id"])
        sequences.setdefault(key, []).append(StateType(row["state"]))
    return sequences


def assert_legal(sequences: dict[Key, list[StateType]]) -> None:
    """Each recorded sequence starts where runs start, ends final, and moves only as the
    table allows."""
    assert sequences
    for (flow_run, task_run, _), states in sequences.items():
        table = FLOW_RUN_TRANSITIONS if task_run is None else TASK_RUN_TRANSITIONS
        assert states[0] is (StateType.RUNNING if task_run is None else StateType.PENDING), (flow_run, task_run, states)
        assert states[-1].is_final, (flow_run, task_run, states)
        for current, new in itertools.pairwise(states):
            assert new in table[current], f"{flow_run} {task_run}: {current.value} -> {new.value} in {states}"


def runs_of(sequences: dict[Key, list[StateType]], flow_name: str) -> list[dict[str | None, list[StateType]]]:
    """The sequences of each run of `flow_name`, oldest first, by task run name (None: the
    flow run; a name a flow retry repeats: its last task run)."""
    by_run: dict[str, dict[str | None, list[StateType]]] = {}
    for (flow_run, task_run, _), states in sequences.items():
        if flow_run.startswith(f"{flow_name}-"):
            by_run.setdefault(flow_run, {})[task_run] = states
    return list(by_run.values())


@pytest.fixture
def no_illegal_moves(caplog: pytest.LogCaptureFixture):
    """The history logs (and skips) an illegal move instead of failing the run: fail the test."""
    caplog.set_level(logging.ERROR, logger="dagrun.history")
    yield
    illegal = [record.getMessage() for record in caplog.records if "Illegal state transition" in record.getMessage()]
    assert illegal == []


def test_representative_runs_record_only_legal_state_sequences(executor, tmp_path, no_illegal_moves):
    flaky_marker = tmp_path / "flaky-failed"

    @task
    def double(x: int) -> int:
        return 2 * x

    @task(retries=2, retry_delay_seconds=0)
    def flaky() -> str:
        if not flaky_marker.exists():
            flaky_marker.write_text("once")
            raise ConnectionError("first attempt fails")
        return "ok"

    @task
    def broken(x: int) -> int:
        raise ValueError(f"bad input {x}")

    @task(cache=True)
    def stored(x: int) -> int:
        return x + 100

    @flow(name="succeeds", executor=executor)
    def succeeds() -> list[int]:
        return [double(x).result() for x in range(3)] + [stored(1).result()]

    @flow(name="retries_then_fails", executor=executor)
    def retries_then_fails() -> int:
        flaky().wait()
        upstream = broken(1)
        return double(double(upstream))  # NotRun downstream, named after `broken`

    @flow(name="retried_body", executor=executor, retries=1)
    def retried_body() -> int:
        value = double(21).result()
        if not body_failed.exists():
            body_failed.write_text("once")
            raise RuntimeError("the first attempt of the body fails")
        return value

    body_failed = tmp_path / "body-failed"
    assert succeeds() == [0, 2, 4, 101]
    assert succeeds() == [0, 2, 4, 101]  # the cached task is a hit now
    assert retried_body() == 42
    state = retries_then_fails(return_state=True)
    assert state.is_failed()

    sequences = recorded_sequences()
    assert_legal(sequences)
    first, second = runs_of(sequences, "succeeds")
    assert (first["stored-0"][-1], second["stored-0"][-1]) == (StateType.COMPLETED, StateType.CACHED)
    assert first[None] == second[None] == [StateType.RUNNING, StateType.COMPLETED]
    [failed] = runs_of(sequences, "retries_then_fails")
    assert failed["flaky-0"][-1] is StateType.COMPLETED, failed  # Retrying only if its worker reported first
    assert failed["broken-0"][-1] is StateType.FAILED
    assert failed["double-0"] == failed["double-1"] == [StateType.PENDING, StateType.NOT_RUN]
    assert failed[None] == [StateType.RUNNING, StateType.FAILED]
    [retried] = runs_of(sequences, "retried_body")
    assert retried[None] == [StateType.RUNNING, StateType.RETRYING, StateType.RUNNING, StateType.COMPLETED]
    doubles = [
        states for (flow_run, task_run, _), states in sequences.items()
        if flow_run.startswith("retried_body-") and task_run == "double-0"
    ]
    assert len(doubles) == 2 and doubles[1] == [StateType.PENDING, StateType.COMPLETED]  # one per attempt; reused


def test_a_cancelled_run_records_only_legal_state_sequences(executor, tmp_path, no_illegal_moves):
    started, release = tmp_path / "started", tmp_path / "release"

    @task
    def quick() -> int:
        return 1

    @task
    def blocker() -> str:
        started.write_text("running")
        while not release.exists():  # in-process, the body cannot move until this returns
            threading.Event().wait(0.02)
        return "released"

    @flow(name="cancelled", executor=executor)
    def cancelled() -> None:
        quick()
        blocker()
        quick()
        quick().wait()

    engines = []

    def cancel_when_started() -> None:
        while not started.exists():
            threading.Event().wait(0.02)
        engines[0].cancellation.request("Cancelled by the test")
        release.write_text("go")

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    try:
        state = run_flow(cancelled, (), {}, return_state=True, observe=engines.append)
    finally:
        release.write_text("go")
        canceller.join()

    assert state.is_cancelled() and state.message == "Cancelled by the test"
    sequences = recorded_sequences()
    assert_legal(sequences)
    assert sequences[(engines[0].flow_run_name, None, None)] == [StateType.RUNNING, StateType.CANCELLED]


def test_worker_deaths_record_only_legal_state_sequences(tmp_path, no_illegal_moves):
    """Retried after its worker died, and crashed with no retry left (its own cluster: the
    shared one must not lose workers)."""
    died = tmp_path / "died-once"
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    try:

        @task(retries=1)
        def fragile() -> str:
            if not died.exists():
                died.write_text(str(os.getpid()))
                os._exit(1)  # the first attempt takes its worker down
            return "done"

        @task
        def exits() -> None:
            os._exit(1)

        @flow(name="deaths", executor=DaskExecutor(address=cluster.scheduler_address))
        def deaths() -> str:
            value = fragile().result()
            exits()  # a step whose crash nobody looked at: it ends the run (DESIGN section 2)
            return value

        assert deaths(return_state=True).is_crashed()
    finally:
        cluster.close()

    sequences = recorded_sequences()
    assert_legal(sequences)
    [run] = runs_of(sequences, "deaths")
    assert StateType.RETRYING in run["fragile-0"] and run["fragile-0"][-1] is StateType.COMPLETED, run
    assert run["exits-0"][-1] is StateType.CRASHED


# ---------------------------------------------------------------- the live history's rules


def test_the_engines_different_end_after_the_workers_adds_no_state_unless_the_table_allows_it():
    history = History()
    history.live.worker_events([
        TaskRunStarted("flow", "a", 1, T0 + 1, WORKER),
        TaskRunFinished("flow", "a", 1, T0 + 1, T0 + 1, T0 + 2, worker=WORKER),
    ])
    # Cancelled with the flow run before the driver saw the end: the task did complete.
    history.live.engine_state("a", StateType.CANCELLED, lambda: TaskRunState("a", "Cancelled", T0 + 3))
    run = history.task_run()
    assert run["states"] == ["Pending", "Completed"] and run["state"] == "Completed"


def test_an_illegal_move_in_the_history_is_logged_and_not_written(caplog):
    history = History()
    history.live.worker_events([
        TaskRunStarted("flow", "a", 1, T0 + 1, WORKER),
        AttemptFailed("flow", "a", 1, T0 + 1, T0 + 1, T0 + 2, "OSError: disk", "tb", "tb", False, worker=WORKER),
    ])
    with caplog.at_level(logging.ERROR, logger="dagrun.history"):
        history.live.worker_events([TaskRunStarted("flow", "a", 2, T0 + 3, WORKER)])  # after its end
    assert history.task_run()["states"] == ["Pending", "Failed"]  # one batch: its end only
    assert [record.getMessage() for record in caplog.records] == [
        "Illegal state transition of task run a: Failed -> Running (allowed from Failed: none, it is final); not recorded"
    ]
