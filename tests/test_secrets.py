"""`dagrun.Secret` and masking: a secret's value never reaches a terminal, a record or an API.

The scan test runs a flow with the real `dagrun` CLI on a real LocalCluster (the task runs in a
worker process), serves the history with a real `dagrun server` subprocess, and looks for the
secret's bytes in every file under $DAGRUN_HOME, every API answer and every CLI output.
Every secret value here is unique (`unique`): the set of known values is process-wide, so a
common text used as a secret would be masked in later tests' output too.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import textwrap
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import distributed
import msgpack
import pydantic
import pytest

from console_script import DAGRUN, running_server
from dagrun import Secret, flow, get_run_logger, task
from dagrun.errors import ConfigError, ParameterValidationError
from dagrun.executors import InProcessExecutor
from dagrun.executors.dask_logs import LOG_TOPIC
from dagrun.history import HistoryStore
from dagrun.secrets import mask, mask_record, remember


def dagrun(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    """The real `dagrun` console script; output kept as bytes, for scanning."""
    return subprocess.run([*DAGRUN, *args], cwd=cwd, capture_output=True, timeout=timeout)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


# --- Secret itself -------------------------------------------------------------------------


def test_get_reads_the_environment_first_then_the_private_file(dagrun_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = dagrun_home / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "API_KEY").write_text("from-the-file\n")
    (secrets / "API_KEY").chmod(0o600)
    monkeypatch.delenv("API_KEY", raising=False)
    assert Secret("API_KEY").get() == "from-the-file"  # `echo value > file`'s newline dropped
    monkeypatch.setenv("API_KEY", "from-the-environment")
    assert Secret("API_KEY").get() == "from-the-environment"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_secret_file_other_users_can_read_is_refused(dagrun_home: Path, mode: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY", raising=False)
    path = dagrun_home / "secrets" / "API_KEY"
    path.parent.mkdir(parents=True)
    path.write_text("exposed-value")
    path.chmod(mode)
    with pytest.raises(ConfigError) as error:
        Secret("API_KEY").get()
    assert str(error.value) == (
        f"Secret file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
    )


def test_a_missing_secret_says_where_to_put_it(dagrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError) as error:
        Secret("NOT_SET_ANYWHERE").get()
    path = dagrun_home / "secrets" / "NOT_SET_ANYWHERE"
    assert str(error.value) == (
        "Secret 'NOT_SET_ANYWHERE' is not set: set the environment variable NOT_SET_ANYWHERE "
        f"or write the value to {path} (chmod 600)"
    )


@pytest.mark.parametrize("name", ["", "../etc/passwd", "has space", 42])
def test_a_bad_secret_name_is_refused(name: object) -> None:
    with pytest.raises(ConfigError, match="Secret name .* is not valid"):
        Secret(name)  # type: ignore[arg-type]


def test_repr_str_format_and_pickle_never_carry_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    value = unique("ReprValue")
    monkeypatch.setenv("DB_PASSWORD", value)
    secret = Secret("DB_PASSWORD")
    assert secret.get() == value
    assert repr(secret) == "Secret('DB_PASSWORD', ****)"
    assert str(secret) == f"{secret}" == "****"
    payload = pickle.dumps(secret)
    assert value.encode() not in payload  # it travels as its name; `.get()` reads it there
    assert pickle.loads(payload) == secret
    with pytest.raises(AttributeError):
        secret.name = "OTHER"  # type: ignore[misc]


def test_known_values_are_masked_whole_and_short_ones_are_left_alone() -> None:
    inner = unique("Inner")
    outer = f"prefix-{inner}-suffix"
    remember(inner, outer.encode(), "abc")
    assert mask(f"a {outer} and {inner}.") == "a **** and ****."  # the longer value whole
    assert mask("abc stays") == "abc stays"  # under MIN_MASKED_LENGTH: would blank ordinary text
    assert mask_record({"message": inner, "level": 20}) == {"message": "****", "level": 20}


# --- Secrets as flow parameters ------------------------------------------------------------


def test_a_secret_parameter_takes_a_name_and_is_stored_as_a_mask(dagrun_home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    value = unique("ParamValue")
    monkeypatch.setenv("DB_PASSWORD", value)

    @flow(executor=InProcessExecutor())
    def connect(password: Secret, token: pydantic.SecretStr, user: str = "admin") -> int:
        assert isinstance(password, Secret)
        return len(password.get()) + len(token.get_secret_value())

    token = unique("TokenValue")
    assert connect("DB_PASSWORD", token) == len(value) + len(token)
    assert connect(Secret("DB_PASSWORD"), pydantic.SecretStr(token)) == len(value) + len(token)
    store = HistoryStore.from_env()
    try:
        runs = store.list_flow_runs()
    finally:
        store.close()
    assert [run["parameters"] for run in runs] == [{"password": "****", "token": "****", "user": "admin"}] * 2


def test_validation_errors_never_echo_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    value = unique("EchoedValue")

    @flow(executor=InProcessExecutor())
    def guarded(token: Annotated[pydantic.SecretStr, pydantic.Field(min_length=100)],
                password: Secret, count: int = 1) -> None:
        pass

    with pytest.raises(ParameterValidationError) as error:
        guarded(value, "not a name: " + value)
    message = str(error.value)
    assert value not in message
    prefix = "Invalid parameters for flow 'guarded': "
    assert message.startswith(prefix)
    assert sorted(message[len(prefix):].split("; ")) == [
        "parameter 'password' expected Secret, got a value (hidden: secret parameter) (Value error, "
        "expected a secret's name (letters, digits, '_', '.', '-') or a dagrun.Secret)",
        "parameter 'token' expected SecretStr, got a value (hidden: secret parameter) "
        f"(Value should have at least 100 items after validation, not {len(value)})",
    ]

    # A known secret value given to an ordinary parameter is masked in the message too.
    monkeypatch.setenv("DB_PASSWORD", value)
    Secret("DB_PASSWORD").get()
    with pytest.raises(ParameterValidationError) as error:
        guarded(pydantic.SecretStr(unique("LongEnough") * 3), "DB_PASSWORD", count=value)
    assert str(error.value) == (
        "Invalid parameters for flow 'guarded': parameter 'count' expected int, got '****' "
        "(Input should be a valid integer, unable to parse string as an integer)"
    )


def test_the_cli_passes_a_secret_parameter_as_text_and_hides_a_bad_one(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(textwrap.dedent(
        """
        from typing import Annotated
        import pydantic
        from dagrun import flow

        @flow
        def login(token: Annotated[pydantic.SecretStr, pydantic.Field(min_length=8)]) -> int:
            return len(token.get_secret_value())
        """
    ))
    numeric = "12345678901234"  # JSON would make it an int, which a SecretStr refuses
    result = dagrun("run", "flows.py:login", "--param", f"token={numeric}", "--address", "", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert numeric.encode() not in result.stdout + result.stderr
    short = "abc1234"
    result = dagrun("run", "flows.py:login", "--param", f"token={short}", "--address", "", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "Error: Invalid parameters for flow 'login': parameter 'token' expected SecretStr, got a "
        "value (hidden: secret parameter) (Value should have at least 8 items after validation, not 7)"
    ]


# --- Masking on Dask workers ----------------------------------------------------------------


@pytest.fixture
def worker_client(local_cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    with distributed.Client(local_cluster.scheduler_address) as client:
        yield client


def test_lines_leave_the_worker_already_masked(worker_client: distributed.Client, dask_executor,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler keeps the events workers send (Dask's dashboard shows them): the values
    must be masked before a line leaves the worker, not only in the driver."""
    on_worker, in_driver, token = unique("OnWorker"), unique("InDriver"), unique("TokenArg")
    def provision(value: str | None) -> None:  # local, so it pickles by value, os.environ by reference
        if value is None:
            os.environ.pop("WORKER_ONLY_SECRET", None)
        else:
            os.environ["WORKER_ONLY_SECRET"] = value

    # Provisioned on the workers only: the worker reads it where the task calls `.get()`.
    worker_client.run(provision, on_worker)
    monkeypatch.setenv("DRIVER_ONLY_SECRET", in_driver)

    @task(log_prints=True)
    def leak(password: Secret, token: pydantic.SecretStr, plain: str) -> int:
        print("worker read", password.get())
        get_run_logger().info("token %s plain %s", token.get_secret_value(), plain)
        return os.getpid()

    @flow(executor=dask_executor)
    def leaky(password: Secret, token: pydantic.SecretStr) -> int:
        plain = Secret("DRIVER_ONLY_SECRET").get()  # known to the driver, passed as a plain str
        return leak(password, token, plain)

    try:
        assert leaky("WORKER_ONLY_SECRET", token) != os.getpid()  # ran in a worker process
    finally:
        worker_client.run(provision, None)
    batches = [batch for _, batch in worker_client.get_events(LOG_TOPIC)]  # msgpack-packed lines
    lines = [line for batch in batches for line in msgpack.unpackb(batch)]
    messages = [line.get("message") for line in lines]
    assert "worker read ****" in messages
    assert "token **** plain ****" in messages
    for value in (on_worker, in_driver, token):
        assert value not in repr(lines)
        assert all(value.encode() not in batch for batch in batches)


def test_a_task_failure_naming_a_secret_is_masked_where_shown_and_stored(executor, dagrun_home: Path) -> None:
    token = unique("FailingToken")

    @task
    def connect(token: pydantic.SecretStr) -> None:
        raise ConnectionError(f"login refused for token {token.get_secret_value()}")

    @flow(executor=executor)
    def login(token: pydantic.SecretStr) -> None:
        connect(token)

    state = login(token, return_state=True)
    assert state.is_failed()
    assert type(state.exception) is ConnectionError  # the user's exception type is kept
    assert str(state.exception) == "login refused for token ****"
    assert state.message == "ConnectionError: login refused for token ****"
    stored = files_under(dagrun_home)
    assert dagrun_home / "dagrun.db" in stored
    assert [path for path, data in stored.items() if token.encode() in data] == []


# --- The scan -------------------------------------------------------------------------------

SCAN_FLOW = textwrap.dedent(
    """
    import os
    from pathlib import Path
    import pydantic
    from dagrun import Secret, flow, get_run_logger, task

    @task(log_prints=True, cache=True)
    def connect(password: Secret, token: pydantic.SecretStr, marker: str) -> int:
        value = password.get()
        Path(marker).write_text(str(os.getpid()))
        print(f"connecting with password {value}")
        get_run_logger().info("logged in with %s and token %s", value, token.get_secret_value())
        return len(value)

    @flow(name="secret_flow", log_prints=True)
    def secret_flow(password: Secret, token: pydantic.SecretStr, marker: str) -> int:
        print("flow has token", token.get_secret_value())
        return connect(password, token, marker)
    """
)


def files_under(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def http_get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.status == 200
        return response.read()


def test_no_secret_value_reaches_disk_api_cli_or_terminal(tmp_path: Path, dagrun_home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    password, token = unique("SuperSecretPw"), unique("TokenSecret")
    monkeypatch.setenv("DB_PASSWORD", password)  # the `dagrun run` subprocess and its workers inherit it
    (tmp_path / "flows.py").write_text(SCAN_FLOW)
    marker = tmp_path / "worker-pid"
    outputs: dict[str, bytes] = {}

    run = subprocess.Popen(
        [*DAGRUN, "run", "flows.py:secret_flow", "--param", "password=DB_PASSWORD",
         "--param", f"token={token}", "--param", f"marker={marker}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = run.communicate(timeout=300)
    outputs["dagrun run (terminal)"] = stdout + stderr
    assert run.returncode == 0, stderr.decode()
    assert int(marker.read_text()) != run.pid  # the task ran in a LocalCluster worker process
    assert b"| connect-0 - connecting with password ****" in stderr
    assert b"| connect-0 - logged in with **** and token ****" in stderr
    assert b"flow has token ****" in stderr

    listing = dagrun("runs", "ls", "--json", cwd=tmp_path)
    assert listing.returncode == 0
    runs = json.loads(listing.stdout)
    assert [r["parameters"] for r in runs] == [{"password": "****", "token": "****", "marker": str(marker)}]
    run_id = runs[0]["id"]
    outputs["runs ls --json"] = listing.stdout + listing.stderr
    for args in (["runs", "show", run_id], ["runs", "show", run_id, "--json"], ["runs", "logs", run_id]):
        result = dagrun(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode()
        outputs[" ".join(args)] = result.stdout + result.stderr
    assert b"connecting with password ****" in outputs[f"runs logs {run_id}"]

    with running_server(cwd=tmp_path) as (server, port):
        for path in ("/api/runs", f"/api/runs/{run_id}", f"/api/runs/{run_id}/logs"):
            outputs[f"GET {path}"] = http_get(port, path)
        logs = json.loads(outputs[f"GET /api/runs/{run_id}/logs"])["logs"]
        assert "logged in with **** and token ****" in [line["message"] for line in logs]
        task_run_id = json.loads(outputs[f"GET /api/runs/{run_id}"])["task_runs"][0]["id"]
        outputs["GET /api/task-runs/{id}"] = http_get(port, f"/api/task-runs/{task_run_id}")
        stored_while_served = files_under(dagrun_home)  # the database's WAL, if the server has one open
    outputs["dagrun server"] = server.stdout.read() + server.stderr.read()  # type: ignore[union-attr]

    stored = {**stored_while_served, **files_under(dagrun_home)}
    assert dagrun_home / "dagrun.db" in stored
    assert any(path.is_relative_to(dagrun_home / "results") for path in stored)  # the cached result
    for value in (password, token):
        secret = value.encode()
        assert [path for path, data in stored.items() if secret in data] == []
        assert [name for name, data in outputs.items() if secret in data] == []
        # What `grep -r` would say, over the home (files written since the first read too).
        grep = subprocess.run(["grep", "-r", "-l", "-a", "-F", value, str(dagrun_home)], capture_output=True)
        assert grep.returncode == 1 and grep.stdout == b""
