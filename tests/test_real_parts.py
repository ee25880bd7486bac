"""Under CI (`CI=true`) a test that cannot find a real part fails, naming what to install; on
a developer's machine it skips. Each case runs pytest itself in a subprocess, once each way."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPOSITORY = TESTS.parent


def pytest_run(*args: str, cwd: Path, ci: bool, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m pytest ARGS` with CI=true or without CI; the caller's own CI setting is dropped."""
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    environment.update(env or {})
    if ci:
        environment["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=300,
    )


def test_a_browser_test_without_chromium_fails_under_ci_naming_what_to_install(tmp_path: Path) -> None:
    test = "tests/test_dashboard_browser.py::test_runs_page_filters_by_state_flow_and_id"
    missing = {"DAGRUN_TEST_CHROMIUM": str(tmp_path / "no-chromium-here")}

    under_ci = pytest_run(test, cwd=REPOSITORY, ci=True, env=missing)
    assert under_ci.returncode == 1, under_ci.stdout + under_ci.stderr
    assert f"Chromium is missing: apt-get install chromium (looked for {tmp_path}/no-chromium-here)" in under_ci.stdout
    assert "1 error" in under_ci.stdout and "skipped" not in under_ci.stdout  # failed in its setup

    locally = pytest_run(test, cwd=REPOSITORY, ci=False, env=missing)
    assert locally.returncode == 0, locally.stdout + locally.stderr
    assert "1 skipped" in locally.stdout and "failed" not in locally.stdout
    assert "Chromium is missing: apt-get install chromium" in locally.stdout


SKIPPING_TESTS = textwrap.dedent(
    """
    import pytest

    def test_needs_a_frobnicator():
        pytest.skip("no frobnicator on this machine")

    @pytest.mark.skipif(True, reason="no widget either")
    def test_needs_a_widget():
        pass

    @pytest.mark.xfail(reason="a known bug", strict=True)
    def test_known_bug():
        assert False
    """
)


def test_any_other_skip_fails_under_ci_and_an_expected_failure_stays_one(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_skipping.py").write_text(SKIPPING_TESTS)
    (tmp_path / "test_skipped_module.py").write_text(
        'import pytest\n\npytest.importorskip("a_module_nobody_installed")\n\n\ndef test_never_collected():\n    pass\n'
    )
    plugin = ["-p", "real_parts"]  # what tests/conftest.py loads: real_parts' hooks
    path = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}

    prefix = "skipped under CI=true, where every real part must run: "

    under_ci = pytest_run(*plugin, "test_skipping.py", cwd=tmp_path, ci=True, env=path)
    assert under_ci.returncode == 1, under_ci.stdout + under_ci.stderr
    assert "1 failed, 1 xfailed, 1 error in" in under_ci.stdout, under_ci.stdout  # skipif: in setup
    for reason in ("no frobnicator on this machine", "no widget either"):
        assert prefix + reason in under_ci.stdout, (reason, under_ci.stdout)

    module_under_ci = pytest_run(*plugin, "test_skipped_module.py", cwd=tmp_path, ci=True, env=path)
    assert module_under_ci.returncode == 2, module_under_ci.stdout  # a collection error stops the run
    assert prefix + "could not import 'a_module_nobody_installed'" in module_under_ci.stdout

    locally = pytest_run(*plugin, cwd=tmp_path, ci=False, env=path)
    assert locally.returncode == 0, locally.stdout + locally.stderr
    assert "3 skipped, 1 xfailed in" in locally.stdout, locally.stdout
