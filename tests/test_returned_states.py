"""States a flow or task returns, as Prefect 3 reads them (`return_value_to_state`): a custom
state name, a task's returned state setting its run's state and message, and which returned
collections count as states — on every executor, with the run history as `dagrun runs show`
gives it.
"""

from __future__ import annotations

import json

import pytest

from console_script import dagrun as dagrun_cli
from dagrun import flow, task
from dagrun.states import Cancelled, Completed, Failed, StateType


def only_flow_run() -> dict:
    [listed] = json.loads(dagrun_cli("runs", "ls", "--json").stdout)
    return json.loads(dagrun_cli("runs", "show", listed["id"], "--json").stdout)


@task
def fails() -> int:
    raise ValueError("bad input")


@task
def ok() -> int:
    return 1


@task
def toggle(fail: bool):
    return Failed(message="told to fail") if fail else Completed(message="told to succeed", data=7)


def test_a_custom_named_state_is_shown_by_name_and_recorded_by_type(executor):
    @flow(executor=executor)
    def skipping():
        return Completed(message="No work to do", name="Skipped")

    state = skipping(return_state=True)
    assert (state.name, state.type, state.message) == ("Skipped", StateType.COMPLETED, "No work to do")
    assert state.is_completed() and repr(state) == "Skipped(message='No work to do', type=Completed)"
    assert repr(Completed(message="done")) == "Completed(message='done')"
    run = only_flow_run()  # the history's state column holds the type; the name leads the message
    assert run["state"] == "Completed" and run["message"] == "Skipped: No work to do"


def test_a_tasks_returned_state_is_its_runs_state_with_its_message(executor):
    @flow(executor=executor)
    def toggles():
        kept = toggle(fail=False)
        failed = toggle(fail=True, return_state=True)
        return kept, failed.message, failed.is_failed()

    assert toggles() == (7, "told to fail", True)
    runs = {task_run["task_run_name"]: task_run for task_run in only_flow_run()["task_runs"]}
    assert (runs["toggle-0"]["state"], runs["toggle-0"]["message"]) == ("Completed", "told to succeed")
    assert (runs["toggle-1"]["state"], runs["toggle-1"]["message"]) == ("Failed", "told to fail")


@pytest.mark.parametrize("returned, final", [
    (lambda: ("bar", fails(return_state=True)), StateType.COMPLETED),  # a state among values: a value
    (lambda: {"failed": fails(return_state=True)}, StateType.COMPLETED),  # a dict is never states
    (lambda: [ok(return_state=True), fails(return_state=True)], StateType.FAILED),
    (lambda: (ok.submit(), fails.submit()), StateType.FAILED),  # futures count as their states
    (lambda: [ok(return_state=True), Cancelled(message="stopped")], StateType.CANCELLED),
    (lambda: [ok(return_state=True), Completed()], StateType.COMPLETED),
])
def test_a_returned_collection_counts_as_states_only_when_every_item_is_one(executor, returned, final):
    @flow(executor=executor)
    def returning():
        return returned()

    assert returning(return_state=True).type is final


def test_a_state_returned_among_values_reaches_the_caller(executor):
    # Prefect's docs (state change hooks): `return "bar", task(return_state=True)` completes.
    @flow(executor=executor)
    def handled():
        return "bar", fails(return_state=True)

    value, state = handled()
    assert value == "bar" and state.is_failed() and isinstance(state.exception, ValueError)
