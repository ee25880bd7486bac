"""The real parts the suite drives (Chromium, PostgreSQL, sshd, the cluster extras, a tmpfs):
a test that cannot find one skips on a developer's machine, but fails under CI (`CI=true`)
with one line naming what to install, so a CI run never turns green by skipping.

    require_part("Chromium", CHROMIUM.exists(), "apt-get install chromium")
    jobqueue = require_module("dask_jobqueue", "dask-jobqueue", "pip install -e '.[test]'")

The two hooks at the bottom are the safety net for any other skip: tests/conftest.py imports
them, so under CI=true every skipped test or module is reported as a failure instead.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest


def under_ci() -> bool:
    """Whether this run is CI's, where every real part must be present (`CI=true`)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_part(name: str, available: bool, install_hint: str) -> None:
    """Fail (under CI) or skip (elsewhere) the running test when the part `name` is missing."""
    if available:
        return
    message = f"{name} is missing: {install_hint}"
    if under_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_module(module: str, name: str, install_hint: str) -> ModuleType:
    """The imported `module`, or `require_part`'s fail/skip naming `name` and the hint."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        require_part(name, False, f"{install_hint} (import {module}: {error})")
        raise  # not reached: require_part raised


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and under_ci() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every real part must run: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI, a test that skipped (a skipif mark, a `pytest.skip`) is a failed test."""
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Under CI, a module that skipped itself while collected (`importorskip`) is an error."""
    outcome = yield
    _fail_skip(outcome.get_result())
