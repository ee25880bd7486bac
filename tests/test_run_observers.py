"""One vocabulary of typed events: a subscriber (`RunObserver`) of a real run, on every
executor, hears every fact in order, through typed methods, and nothing of what it does not
override costs anything."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from dagrun import flow, task
from dagrun.engine import run_flow
from dagrun.logs import LogLine
from dagrun.observers import FlowRunStarted, FlowRunStateChanged, Observers, RunObserver
from dagrun.states import State, StateType
from dagrun.task_events import AttemptFailed, TaskEvent, TaskRunFinished, TaskRunStarted
from dagrun.task_run_record import TaskRun


class Spy(RunObserver):
    """Writes down what it hears: (event, subject, detail)."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, object]] = []
        self.worker_events: list[TaskEvent] = []
        self.lines: list[LogLine] = []
        self.ids: dict[str, str] = {}  # task run name -> id
        self._lock = threading.Lock()  # workers' events and log lines come on other threads

    def flow_run_started(self, event: FlowRunStarted) -> None:
        self.heard.append(("flow started", event.flow_run_name, event.parent_flow_run_id))

    def flow_run_state(self, event: FlowRunStateChanged) -> None:
        self.heard.append(("flow state", event.run.flow_run_name, (event.state.type, event.failed_task)))

    def task_run_created(self, run: TaskRun, flow_run_id: str) -> None:
        self.heard.append(("created", run.name, flow_run_id))
        self.ids[run.name] = run.id

    def task_runs_dispatched(self, runs: Sequence[TaskRun]) -> None:
        for run in runs:
            self.heard.append(("dispatched", run.name, None))

    def task_run_state(self, run: TaskRun, state: State, flow_run_id: str) -> None:
        self.heard.append(("task state", run.name, state.type))

    def task_events(self, events: Sequence[TaskEvent]) -> None:
        with self._lock:
            self.worker_events.extend(events)

    def log(self, line: LogLine) -> None:
        with self._lock:
            self.lines.append(line)

    def said(self, what: str) -> list[tuple[str, object]]:
        return [(subject, detail) for kind, subject, detail in self.heard if kind == what]


def test_a_subscriber_hears_every_fact_of_a_run_in_order(executor, tmp_path):
    failed_once = tmp_path / "failed-once"

    @task(retries=1, retry_delay_seconds=0)
    def extract() -> int:
        if not failed_once.exists():
            failed_once.write_text("once")
            raise ConnectionError("first attempt fails")
        return 3

    @task(cache=True)
    def stored(x: int) -> int:
        return x * 10

    @task
    def broken(x: int) -> int:
        raise ValueError(f"cannot load {x}")

    @task
    def after(x: int) -> int:
        return x + 1

    @flow(name="observed", executor=executor)
    def observed() -> int:
        value = stored(extract()).result()
        after(broken(value)).wait()
        return value

    spies = []
    for _ in range(2):  # the second run's `stored` is a cache hit
        spy = Spy()
        state = run_flow(observed, (), {}, return_state=True, observers=[spy])
        spies.append(spy)
    first, second = spies

    [(name, parent)] = first.said("flow started")
    assert name.startswith("observed-") and parent is None
    assert [name for name, _ in first.said("created")] == ["extract-0", "stored-0", "broken-0", "after-0"]
    dispatched = [name for name, _ in first.said("dispatched")]
    assert len(set(dispatched)) == len(dispatched) and {"extract-0", "stored-0", "broken-0"} <= set(dispatched)
    assert "stored-0" not in [name for name, _ in second.said("dispatched")]  # a cache hit takes no worker
    assert dict(first.said("task state")) == {
        "extract-0": StateType.COMPLETED, "stored-0": StateType.COMPLETED, "broken-0": StateType.FAILED,
        "after-0": StateType.NOT_RUN,
    }
    assert dict(second.said("task state"))["stored-0"] is StateType.CACHED
    assert first.said("flow state") == [(name, (state.type, "broken-0"))]  # the final state returned
    # Each fact about a task run comes after its creation; the flow's start first, its end last.
    assert first.heard[0][0] == "flow started" and first.heard[-1][0] == "flow state"
    created = {subject: index for index, (kind, subject, _) in enumerate(first.heard) if kind == "created"}
    for index, (kind, subject, _) in enumerate(first.heard[1:-1], start=1):
        assert created[subject] <= index, (kind, subject)

    # Workers' records: each attempt started on a worker, the failed one, the finished ones
    # (a stored result with its size and content hash).
    reported = {}
    for event in first.worker_events:
        reported.setdefault(event.task_run_id, []).append((type(event), event))
    extract = reported[first.ids["extract-0"]]
    assert [kind for kind, _ in extract] == [TaskRunStarted, AttemptFailed, TaskRunStarted, TaskRunFinished]
    assert [event.attempt for _, event in extract] == [1, 1, 2, 2]
    assert extract[1][1].retrying and "ConnectionError: first attempt fails" in extract[1][1].error
    [(_, raised)] = [item for item in reported[first.ids["broken-0"]] if item[0] is AttemptFailed]
    assert not raised.retrying and "ValueError: cannot load 30" in raised.error
    finished = reported[first.ids["stored-0"]][-1][1]
    assert type(finished) is TaskRunFinished and finished.cache_key and finished.size > 0 and finished.checksum
    assert first.ids["after-0"] not in reported
    assert all(event.worker for event in first.worker_events)

    messages = [line["message"] for line in first.lines]
    assert any(message.startswith(f"Finished in state {state.name}") for message in messages), messages


def test_only_the_methods_a_subscriber_overrides_are_called():
    class Counts(RunObserver):
        def __init__(self) -> None:
            self.lines = 0

        def log(self, line: LogLine) -> None:
            self.lines += 1

    class Silent(RunObserver):
        pass

    counts = Counts()
    observers = Observers([Silent(), counts])
    assert observers.wants("log") and not observers.wants("task_events") and not observers.wants("task_run_state")
    assert observers.log == counts.log  # one subscriber: called directly, no fan-out in between
    observers.task_run_state(None, State(StateType.COMPLETED), "flow")  # nobody listens: nothing happens
    twice = Observers([counts, counts])
    twice.log({})
    assert counts.lines == 2
