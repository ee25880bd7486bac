"""Prefect's logging how-to and the logging parts of its testing how-to, their examples with
`prefect` -> `dagrun` in the imports.

Sources (PrefectHQ/prefect):
- docs/v3/how-to-guides/workflows/add-logging.mdx. "Log from subprocesses" needs
  `prefect.context.with_context` (no dagrun equivalent: listed in the report).
- docs/v3/how-to-guides/workflows/test-workflows.mdx, "Capture log output in tests" without its
  `prefect_test_harness` fixture (a temporary Prefect server: out of scope, dagrun needs none).
"""

from __future__ import annotations

import logging

from prefect_examples import load_example, messages, on_executor  # noqa: F401

CUSTOM_LOGS = '''\
from dagrun import flow, task
from dagrun.logging import get_run_logger


@task(name="log-example-task")
def logger_task():
    # this logger instance will emit logs 
    # associated with both the flow run *and* the individual task run
    logger = get_run_logger()
    logger.info("INFO level log message from a task.")
    logger.debug("DEBUG level log message from a task.")


@flow(name="log-example-flow")
def logger_flow():
    # this logger instance will emit logs
    # associated with the flow run only
    logger = get_run_logger()
    logger.info("INFO level log message.")
    logger.debug("DEBUG level log message.")
    logger.error("ERROR level log message.")
    logger.critical("CRITICAL level log message.")

    logger_task()
'''

LOG_PRINTS_INHERITED = '''\
from dagrun import task, flow

@task
def my_task():
    print("we're logging print statements from a task")

@flow(log_prints=True)
def my_flow():
    print("we're logging print statements from a flow")
    my_task()
'''

LOG_PRINTS_OPTED_OUT = '''\
from dagrun import task, flow

@task(log_prints=False)
def my_task():
    print("not logging print statements in this task")

@flow(log_prints=True)
def my_flow():
    print("we're logging print statements from a flow")
    my_task()
'''

LOG_FROM_THREADS = '''\
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

from dagrun import flow, task
from dagrun.logging import get_run_logger


def process_single_file(path: str) -> str:
    # Runs in a worker thread; works because the caller invoked us via
    # ctx.run(...), so the parent's run context is active here.
    logger = get_run_logger()
    logger.info(f"Processing {path}")
    return path


@task
def process_files(files: list[str]) -> list[str]:
    # Snapshot the parent thread's context once per worker invocation.
    # Each ctx.run(...) runs the worker with that context active.
    contexts = [copy_context() for _ in files]
    with ThreadPoolExecutor(max_workers=4) as executor:
        return list(
            executor.map(
                lambda ctx, f: ctx.run(process_single_file, f),
                contexts,
                files,
            )
        )


@flow
def my_flow() -> None:
    process_files(["file1.txt", "file2.txt", "file3.txt"])
'''

CAPTURE_LOGS_IN_TESTS = '''\
import logging
from typing import Any

import pytest
from dagrun import flow, get_run_logger, task


@task
def log_message() -> None:
    logger = get_run_logger()
    logger.info("Logging from task")


@flow
def parent_flow() -> None:
    logger = get_run_logger()
    logger.info("Logging from flow")
    log_message()


def test_flow_log_message(caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    parent_flow()

    assert "Logging from flow" in caplog.messages


def test_task_log_message(caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    parent_flow()

    assert "Logging from task" in caplog.messages
'''


def _levels(records: list[logging.LogRecord]) -> list[tuple[str, str]]:
    return [(record.levelname, record.getMessage()) for record in records]


def test_run_loggers_log_at_info_and_above(on_executor, tmp_path, run_logs):
    load_example(tmp_path, CUSTOM_LOGS).logger_flow()
    logged = _levels(run_logs)
    for line in [
        ("INFO", "INFO level log message."),
        ("ERROR", "ERROR level log message."),
        ("CRITICAL", "CRITICAL level log message."),
        ("INFO", "INFO level log message from a task."),
    ]:
        assert line in logged, logged
    assert not [message for _, message in logged if message.startswith("DEBUG level")], logged  # below INFO


def test_tasks_inherit_log_prints_from_their_flow(on_executor, tmp_path, run_logs):
    load_example(tmp_path, LOG_PRINTS_INHERITED).my_flow()
    logged = messages(run_logs)
    assert "we're logging print statements from a flow" in logged, logged
    assert "we're logging print statements from a task" in logged, logged


def test_a_task_can_opt_out_of_log_prints(on_executor, tmp_path, run_logs):
    load_example(tmp_path, LOG_PRINTS_OPTED_OUT).my_flow()
    logged = messages(run_logs)
    assert "we're logging print statements from a flow" in logged, logged
    assert "not logging print statements in this task" not in logged, logged


def test_threads_given_the_tasks_context_log_to_its_run(on_executor, tmp_path, run_logs):
    load_example(tmp_path, LOG_FROM_THREADS).my_flow()
    logged = messages(run_logs)
    assert {"Processing file1.txt", "Processing file2.txt", "Processing file3.txt"} <= set(logged), logged


def test_pytests_caplog_captures_flow_and_task_logs(on_executor, tmp_path, caplog):
    example = load_example(tmp_path, CAPTURE_LOGS_IN_TESTS)
    example.test_flow_log_message(caplog)  # the example's own tests, given pytest's caplog
    caplog.clear()
    example.test_task_log_message(caplog)
