"""The `dagrun` console script, as a user runs it: tests reach every command through it, never
through a module path (`python -m dagrun...`) or a click object in-process, so a command that
is missing from the script, or a broken entry point, fails a test.

    result = dagrun("runs", "ls", "--json", cwd=tmp_path)
    process = subprocess.Popen([*DAGRUN, "server", "--port", "0"], ...)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def console_script() -> str:
    """The `dagrun` script installed beside this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).parent / "dagrun"
    if beside.exists():
        return str(beside)
    on_path = shutil.which("dagrun")
    if on_path is None:
        raise RuntimeError("The dagrun console script is missing: pip install -e '.[test]'")
    return on_path


DAGRUN = [console_script()]


def dagrun(
    *args: str,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `dagrun ARGS` to completion, capturing its output as text."""
    return subprocess.run(
        [*DAGRUN, *args], cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=timeout,
    )


@contextmanager
def running_server(
    *args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`dagrun server --port 0 ARGS` as a subprocess: yields it and the port it bound, and
    stops it afterwards (its output stays readable from the pipes)."""
    server = subprocess.Popen(
        [*DAGRUN, "server", "--port", "0", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        match = re.match(rb"dagrun server: http://\S+:(\d+)/", server.stdout.readline())
        if match is None:
            server.kill()
            raise AssertionError(f"dagrun server did not start: {server.communicate(timeout=30)[1]!r}")
        yield server, int(match.group(1))
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(30)
