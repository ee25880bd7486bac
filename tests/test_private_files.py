"""Everything dagrun creates under $DAGRUN_HOME is private to the user (0700 directories, 0600
files) whatever the umask: the real `dagrun` CLI in subprocesses, real LocalCluster workers,
the real SQLite files (-wal and -shm included), `dagrun server` and `dagrun serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dagrun.history import HistoryStore
from dagrun.results import ResultStore

DAGRUN = shutil.which("dagrun")
TIMEOUT = 120.0

FLOWS = textwrap.dedent(
    """
    from dagrun import flow, get_run_logger, task
    from dagrun.deployments import make_deployment

    @task(cache=True)
    def double(x: int) -> int:
        get_run_logger().info("doubling %d", x)
        return 2 * x

    @task(cache=True)
    def pair(x: int) -> tuple:
        return (x, x)  # a tuple: a pickled entry

    @flow(name="pipeline")
    def pipeline(x: int = 1):
        return [double(x), pair(x)]

    every_second = make_deployment(pipeline, name="every-second", interval=1, parameters={"x": 7})
    """
)


def cli(*args: str, cwd: Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """The real `dagrun` console script, run with `umask`."""
    assert DAGRUN, "the dagrun console script is not installed"
    return subprocess.run(
        [DAGRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
        preexec_fn=lambda: os.umask(umask),
    )


def modes_under(root: Path) -> dict[str, str]:
    """`stat`'s view of root and everything under it: relative path -> "drwx------ 700"."""
    found = {".": root}
    found.update({str(path.relative_to(root)): path for path in root.rglob("*")})
    modes = {}
    for name, path in sorted(found.items()):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue  # SQLite removed a -wal/-shm file between listing and stat
        modes[name] = f"{stat.filemode(mode)} {stat.S_IMODE(mode):o}"
    return modes


def open_to_others(modes: dict[str, str]) -> dict[str, str]:
    return {name: mode for name, mode in modes.items() if int(mode.split()[1], 8) & 0o077}


@contextmanager
def running(*args: str, cwd: Path, umask: int = 0o022) -> Iterator[subprocess.Popen[str]]:
    """A long-running `dagrun` command (server, serve), stopped with SIGTERM at the end."""
    assert DAGRUN, "the dagrun console script is not installed"
    process = subprocess.Popen(
        [DAGRUN, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=lambda: os.umask(umask),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_fresh_home_is_private_whatever_the_umask(tmp_path: Path, dagrun_home: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    assert not dagrun_home.exists()

    first = cli("run", "flows.py:pipeline", "-p", "x=3", cwd=tmp_path, umask=0o022)
    assert first.returncode == 0, first.stderr
    # Everything the CLI and its LocalCluster's workers create, even with no umask at all.
    second = cli("run", "flows.py:pipeline", "-p", "x=4", cwd=tmp_path, umask=0o000)
    assert second.returncode == 0, second.stderr
    again = cli("run", "flows.py:pipeline", "-p", "x=4", cwd=tmp_path, umask=0o000)
    assert again.returncode == 0 and again.stderr.count("Cached '") == 2, again.stderr
    entries = ResultStore(dagrun_home / "results").entries()
    assert sorted(info.serializer for info in entries) == ["cloudpickle"] * 2 + ["msgpack"] * 2

    listed = cli("cache", "ls", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr

    # The dashboard keeps its connection open: SQLite's -wal and -shm files exist meanwhile.
    with running("server", "--port", "0", cwd=tmp_path, umask=0o000) as server:
        assert server.stdout is not None
        match = re.match(r"dagrun server: (http://127\.0\.0\.1:\d+)/", server.stdout.readline())
        assert match, server.stderr.read() if server.stderr else ""
        with urllib.request.urlopen(f"{match.group(1)}/api/runs", timeout=30) as response:
            assert len(json.loads(response.read())) == 3
        while_serving = modes_under(dagrun_home)
    assert {"dagrun.db", "dagrun.db-wal", "dagrun.db-shm"} <= set(while_serving), while_serving

    # A deployment's run writes its output to serve-logs/.
    with running("serve", "flows.py", "--poll-interval", "0.2", cwd=tmp_path, umask=0o000) as serve:
        deadline = time.monotonic() + TIMEOUT
        while not list((dagrun_home / "serve-logs").rglob("*.log")) or not _deployment_completed(tmp_path):
            assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
            assert time.monotonic() < deadline, "the deployment's run did not complete"
            time.sleep(0.3)

    after_all = modes_under(dagrun_home)
    print("\n".join(f"{mode}  {name}" for name, mode in {**while_serving, **after_all}.items()))
    assert open_to_others(while_serving) == {}
    assert open_to_others(after_all) == {}
    assert after_all["."] == "drwx------ 700" and after_all["dagrun.db"] == "-rw------- 600"
    # Two entries from each of x=3, x=4 and the deployment's x=7.
    entry_files = [name for name in after_all if re.fullmatch(r"results/[0-9a-f]{2}/[0-9a-f]+", name)]
    assert len(entry_files) == 6 and all(after_all[name] == "-rw------- 600" for name in entry_files)
    assert any(name.startswith("serve-logs/every-second/") for name in after_all)
    assert any(name.startswith("cache-explain/") for name in after_all)


def _deployment_completed(cwd: Path) -> bool:
    listed = cli("runs", "ls", "--json", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    return any(run["deployment"] == "every-second" and run["state"] == "Completed"
               for run in json.loads(listed.stdout))


def test_an_existing_home_open_to_others_is_kept_with_one_warning(tmp_path: Path, dagrun_home: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    dagrun_home.mkdir(mode=0o755)
    dagrun_home.chmod(0o755)
    warning = (
        f"dagrun home {dagrun_home} is open to other users (mode 0755): they can read run "
        f"parameters, logs and cached results; make it private with: chmod 700 {dagrun_home}"
    )
    listed = cli("runs", "ls", cwd=tmp_path)
    assert listed.returncode == 0
    assert listed.stderr.splitlines() == [warning]

    ran = cli("run", "flows.py:pipeline", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.splitlines().count(warning) == 1
    assert stat.S_IMODE(dagrun_home.stat().st_mode) == 0o755  # the user's choice, not undone
    # What dagrun creates inside it is private all the same.
    assert open_to_others({k: v for k, v in modes_under(dagrun_home).items() if k != "."}) == {}

    dagrun_home.chmod(0o700)
    quiet = cli("runs", "ls", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_stores_create_private_files_in_process_with_no_umask(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    previous = os.umask(0)
    try:
        store = ResultStore(tmp_path / "deep" / "results")
        info = store.put("ab" * 16, (1, 2), task_name="t")
        HistoryStore(tmp_path / "db" / "history.db").close()  # a file in an existing directory
    finally:
        os.umask(previous)
    assert stat.S_IMODE(Path(info.path).stat().st_mode) == 0o600
    for directory in (tmp_path / "deep", tmp_path / "deep" / "results", Path(info.path).parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "db" / "history.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("root_mode", [0o2770, 0o750], ids=["2770", "750"])
def test_a_store_root_made_for_a_group_gives_its_entries_the_group_bits(
    tmp_path: Path, root_mode: int
) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(root_mode)
    previous = os.umask(0o077)  # a worker's umask does not decide who shares the store
    try:
        info = ResultStore(root).put("cd" * 16, [1, 2], task_name="t")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(Path(info.path).stat().st_mode) == root_mode & 0o666
    assert stat.S_IMODE(Path(info.path).parent.stat().st_mode) == root_mode
