"""State hooks and failure notifications: user code and endpoints told when a run ends.

`on_completion` / `on_failure` hooks (on tasks and flows) and flows' `on_running` hooks are
called in the driver as `hook(task_or_flow, run_record, state)`, Prefect's signature; a hook
that raises is logged, never fails the run. Tasks' `on_running` hooks run where the task runs,
before each attempt (`dagrun.state_hooks`).
Notifiers (`@flow(notify=...)`, or `DAGRUN_NOTIFY_WEBHOOK` / `DAGRUN_NOTIFY_SLACK` for every
flow) post when a top-level flow run fails or crashes. `HookRunner` is the engine's
subscriber (`RunObserver`) that calls them when runs reach their final states.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dagrun.notify import Notifier, SlackNotifier, WebhookNotifier, notifiers_from
from dagrun.observers import FlowRunStarted, FlowRunStateChanged, RunObserver
from dagrun.state_hooks import TaskRunRecord, call_hooks
from dagrun.states import State, StateType
from dagrun.task_run_record import TaskRun

__all__ = ["FlowRunRecord", "HookRunner", "TaskRunRecord", "flow_notifiers"]

@dataclass(frozen=True, slots=True)
class FlowRunRecord:
    """What a flow hook or notifier learns about the run it is called for."""

    id: str
    name: str
    flow_name: str
    parameters: dict[str, Any]
    start_time: float | None
    end_time: float | None
    failed_task: str | None


class HookRunner(RunObserver):
    """Calls the state hooks of tasks and flows, and a failed top-level run's notifiers."""

    def task_run_state(self, run: TaskRun, state: State, flow_run_id: str) -> None:
        if run.task.on_completion_hooks or run.task.on_failure_hooks:
            run_task_hooks(run, state, flow_run_id)

    def flow_run_started(self, event: FlowRunStarted) -> None:
        if event.flow.on_running_hooks:  # the run entered Running: its body is about to start
            run_flow_hooks(FlowRunStateChanged(event, State(StateType.RUNNING, start_time=event.start_time)))

    def flow_run_state(self, event: FlowRunStateChanged) -> None:
        run_flow_hooks(event)


def run_task_hooks(run: TaskRun, state: State, flow_run_id: str) -> None:
    task = run.task
    if state.is_completed():
        hooks = task.on_completion_hooks
    else:
        hooks = task.on_failure_hooks if state.is_failed() or state.is_crashed() else ()
    record = TaskRunRecord(run.id, run.name, task.name, flow_run_id, run.cache_key)
    call_hooks(hooks, task, record, state)


def run_flow_hooks(event: FlowRunStateChanged) -> None:
    run, state = event.run, event.state
    flow = run.flow
    record = FlowRunRecord(
        run.flow_run_id, run.flow_run_name, flow.name, dict(run.parameters),
        state.start_time, state.end_time, event.failed_task,
    )
    if state.type is StateType.RUNNING:  # the first attempt (`flow_run_started`) or a retry
        call_hooks(flow.on_running_hooks, flow, record, state)
    elif state.is_completed():
        call_hooks(flow.on_completion_hooks, flow, record, state)
    elif state.type in (StateType.FAILED, StateType.CRASHED):
        call_hooks(flow.on_failure_hooks, flow, record, state)
        if run.parent_flow_run_id is None:
            for notifier in flow_notifiers(flow):
                notifier.notify(record, state)


def flow_notifiers(flow: Any) -> list[Notifier]:
    notifiers = notifiers_from(flow.notify)
    if os.environ.get("DAGRUN_NOTIFY_WEBHOOK"):
        notifiers.append(WebhookNotifier(os.environ["DAGRUN_NOTIFY_WEBHOOK"]))
    if os.environ.get("DAGRUN_NOTIFY_SLACK"):
        notifiers.append(SlackNotifier(os.environ["DAGRUN_NOTIFY_SLACK"]))
    return notifiers

