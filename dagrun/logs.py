"""Run loggers: log lines from flows and tasks, wherever they run, reach the driver's console.

A line logged in a task becomes a plain dict handed to the run context's `log_sink`. On a
Dask worker the sink forwards the dict to the driver; in the driver the sink prints it (and
later stores it). `print` inside a task or flow with `log_prints=True` becomes an INFO line.
"""

from __future__ import annotations

import builtins
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

from dagrun.context import current_flow_run, current_task_run
from dagrun.tracebacks import format_exception

CONSOLE_LOGGER = "dagrun.runs"
_original_print = builtins.print

# Run loggers default to INFO in every process (workers included), whatever the root level;
# DAGRUN_LOGGING_LEVEL or an explicit level on the "dagrun" logger changes that.
if logging.getLogger("dagrun").level == logging.NOTSET:
    logging.getLogger("dagrun").setLevel(os.environ.get("DAGRUN_LOGGING_LEVEL", "INFO").upper())


class RunLogger(logging.LoggerAdapter):
    """A logger bound to one flow or task run; its lines go to the run context's sink."""

    def __init__(self, logger: logging.Logger, context: Any) -> None:
        super().__init__(logger, {})
        self.context = context

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        message = str(msg) % args if args else str(msg)
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            if exc_info[1] is not None:
                message = message + "\n" + format_exception(exc_info[1])  # real file names
        self.context.log_sink(make_log_line(self.context, level, message, self.logger.name))

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kwargs)


def make_log_line(context: Any, level: int, message: str, logger: str = "dagrun") -> LogLine:
    """The picklable form of one log line, for a flow or task run context."""
    return log_line(
        level, message, logger, context.flow_run_id, context.flow_run_name,
        getattr(context, "task_run_id", None), getattr(context, "task_run_name", None),
    )


class LogLine(TypedDict):
    """One log line as it travels from workers to the driver and into the history: a plain
    dict (picklable, msgpack-friendly), typed here for whoever reads it."""

    timestamp: float
    level: int
    logger: str
    message: str
    flow_run_id: str | None
    flow_run_name: str | None
    task_run_id: str | None
    task_run_name: str | None


def log_line(
    level: int,
    message: str,
    logger: str,
    flow_run_id: str | None,
    flow_run_name: str | None,
    task_run_id: str | None = None,
    task_run_name: str | None = None,
) -> LogLine:
    """One log line as the plain dict that travels from workers and into the history."""
    return {
        "timestamp": time.time(),
        "level": level,
        "logger": logger,
        "message": message,
        "flow_run_id": flow_run_id,
        "flow_run_name": flow_run_name,
        "task_run_id": task_run_id,
        "task_run_name": task_run_name,
    }


def get_run_logger() -> logging.LoggerAdapter:
    """The logger for the current task run or flow run; outside any run, a plain dagrun logger."""
    context = current_task_run() or current_flow_run()
    if context is None:
        quiet = all(logging.getLogger(name).disabled for name in _RUN_LOGGERS)
        return logging.LoggerAdapter(logging.getLogger("dagrun.task_run" if quiet else "dagrun"), {})
    name = "dagrun.task_run" if hasattr(context, "task_run_id") else "dagrun.flow_run"
    return RunLogger(logging.getLogger(name), context)


_RUN_LOGGERS = ("dagrun.flow_run", "dagrun.task_run", CONSOLE_LOGGER)


@contextmanager
def disable_run_logger() -> Iterator[None]:
    """Silence run loggers, as Prefect's `disable_run_logger` does for tests that call a task's
    `.fn()` directly: `get_run_logger()` outside a run then returns a disabled logger."""
    loggers = [logging.getLogger(name) for name in _RUN_LOGGERS]
    before = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, before):
            logger.disabled = disabled


class ConsoleFormatter(logging.Formatter):
    """`12:00:01.123 | INFO    | etl-3f9a1c | extract-0 - message`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        names = [n for n in (getattr(record, "flow_run_name", None), getattr(record, "task_run_name", None)) if n]
        prefix = " | ".join(names)
        text = f"{stamp}.{int(record.msecs):03d} | {record.levelname:<7} | {prefix} - {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is now (so a live progress display can redirect it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # The line propagates to the root logger too: when the program put a terminal handler
        # there (`logging.basicConfig()`), that one prints it, and printing here would double it.
        if not _root_prints_to_terminal():
            super().emit(record)


def _root_prints_to_terminal() -> bool:
    terminals = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return any(
        type(handler) is logging.StreamHandler and handler.stream in terminals
        for handler in logging.getLogger().handlers
    )


def console_logger() -> logging.Logger:
    """The driver's logger for run lines, given a stderr handler unless the user configured one.

    Its records also propagate to the root logger, as Prefect's run logs do: pytest's `caplog`
    and the handlers a program sets on the root logger see every flow and task run line."""
    logger = logging.getLogger(CONSOLE_LOGGER)
    if not logger.handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(ConsoleFormatter())
        logger.addHandler(handler)
    return logger


def print_log_line(line: dict) -> None:
    """Print one log line (from any worker) on the driver's console."""
    logger = console_logger()
    level = line["level"]
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(
        logger.name, level, "", 0, line["message"], None, None,
        extra={"flow_run_name": line.get("flow_run_name"), "task_run_name": line.get("task_run_name")},
    )
    record.created = line["timestamp"]
    record.msecs = (line["timestamp"] % 1) * 1000
    logger.handle(record)


def _capturing_print(*values: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False) -> None:
    """`print` that becomes an INFO run-log line inside a run with `log_prints=True`."""
    context = current_task_run() or current_flow_run()
    if context is None or not context.log_prints or file not in (None, sys.stdout):
        _original_print(*values, sep=sep, end=end, file=file, flush=flush)
        return
    buffer = io.StringIO()
    _original_print(*values, sep=sep, end="", file=buffer)
    context.log_sink(make_log_line(context, logging.INFO, buffer.getvalue(), "dagrun.print"))


def capture_prints() -> None:
    """Route `print` through run contexts (idempotent; a no-op outside `log_prints` runs)."""
    if builtins.print is not _capturing_print:
        builtins.print = _capturing_print
