"""Run loggers and print capture: lines from any worker reach the driver, named by run."""

from __future__ import annotations

import logging
import threading
import time

from dagrun import flow, get_run_logger, task


def by_message(records, text):
    return [r for r in records if text in r.getMessage()]


def test_task_and_flow_logs_reach_the_driver_prefixed_with_run_names(executor, run_logs):
    @task
    def extract(day):
        get_run_logger().info("extracting %s", day)
        get_run_logger().debug("hidden at INFO level")
        return day

    @flow(name="etl_logs", executor=executor)
    def pipeline():
        get_run_logger().warning("flow says hi")
        return extract("2026-11-25")

    pipeline()
    [task_line] = by_message(run_logs, "extracting 2026-11-25")
    assert task_line.task_run_name == "extract-0"
    assert task_line.flow_run_name.startswith("etl_logs-")
    assert task_line.levelno == logging.INFO
    [flow_line] = by_message(run_logs, "flow says hi")
    assert flow_line.task_run_name is None and flow_line.levelno == logging.WARNING
    assert not by_message(run_logs, "hidden at INFO level")
    text = logging.getLogger("dagrun.runs").handlers[0].format(task_line)
    assert "| INFO    | etl_logs-" in text and "| extract-0 - extracting 2026-11-25" in text


def test_log_prints_turns_print_into_run_log_lines(executor, run_logs, capsys):
    @task(log_prints=True)
    def chatty():
        print("hello", "from", "a task")

    @task
    def inherits():
        print("inherited setting")

    @task(log_prints=False)
    def quiet():
        print("plain stdout")

    @flow(executor=executor, log_prints=True)
    def pipeline():
        chatty()
        inherits()
        quiet()
        print("from the flow body")

    pipeline()
    assert [r.task_run_name for r in by_message(run_logs, "hello from a task")] == ["chatty-0"]
    assert by_message(run_logs, "inherited setting")
    assert by_message(run_logs, "from the flow body")
    assert not by_message(run_logs, "plain stdout")


def test_worker_log_lines_arrive_while_the_task_is_still_running(dask_executor, run_logs):
    arrived = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if "halfway" in record.getMessage():
                arrived.set()

    watcher = Watch()
    logging.getLogger("dagrun.runs").addHandler(watcher)

    @task
    def long_running():
        get_run_logger().info("halfway")
        time.sleep(3)
        return "done"

    @flow(executor=dask_executor)
    def pipeline():
        future = long_running()
        seen_early = arrived.wait(timeout=2.5)
        return seen_early, future

    try:
        seen_early, result = pipeline()
    finally:
        logging.getLogger("dagrun.runs").removeHandler(watcher)
    assert seen_early is True and result == "done"


def test_failed_task_logs_its_error_with_traceback(executor, run_logs):
    @task
    def broken():
        raise KeyError("missing column")

    @flow(executor=executor)
    def pipeline():
        broken()

    state = pipeline(return_state=True)
    assert state.is_failed()
    [line] = by_message(run_logs, "Task run 'broken-0' failed: KeyError: 'missing column'")
    assert line.levelno == logging.ERROR and "Traceback" in line.getMessage()
    assert by_message(run_logs, "Finished in state Failed")
