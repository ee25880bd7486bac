"""Scaling out, against real `dask scheduler` / `dask worker` processes on 127.0.0.1: TLS with
certificates made here, the worker version check, placement by resources, tag concurrency
limits across two driver processes, the config's worker_env / scheduler_options on
clusters dagrun starts, and an SSHCluster config run through a private sshd on 127.0.0.1.

Tested elsewhere and not repeated: attaching by address and via YAML, the insecure-address
refusal, a worker SIGKILLed mid-task and a poison task (tests/test_dask_clusters.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import psutil
import pytest
from conftest import child_processes, wait_until_gone
from console_script import dagrun
from real_parts import require_module, require_part

from dagrun import flow, task
from dagrun.concurrency import read_limits
from dagrun.errors import ConfigError
from dagrun.executors import DaskExecutor
from dagrun.executors.dask_clusters import managed_cluster_kwargs, version_mismatches
from dagrun.executors.dask_worker import semaphore_name
from dagrun.history import HistoryStore

DASK_SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
DASK_WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]
LOOPBACK_WORKER = ["--host", "127.0.0.1", "--no-dashboard"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


class Processes:
    """Processes a test starts, each in its own session; `stop()` ends every process group
    (SIGTERM, then SIGKILL after 20 s). Output goes to log files, shown when a test fails."""

    def __init__(self, log_directory: Path) -> None:
        self.log_directory = log_directory
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        self.log_directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_directory / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command, env=env or dict(os.environ), cwd=cwd, start_new_session=True,
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.started.append((name, process))
        return process

    def log(self, name: str) -> str:
        return (self.log_directory / f"{name}.log").read_text(errors="replace")

    def stop(self, only: subprocess.Popen | None = None) -> None:
        chosen = [process for _, process in self.started if only is None or process is only]
        for process in chosen:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in chosen:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path / "process-logs")
    try:
        yield started
    finally:
        started.stop()


def start_scheduler(processes: Processes, *extra: str, name: str = "scheduler") -> int:
    port = free_port()
    processes.start(name, [
        *DASK_SCHEDULER, "--host", "127.0.0.1", "--port", str(port),
        "--dashboard-address", "127.0.0.1:0", "--no-show", *extra,
    ])
    return port


def wait_for_workers(address: str, count: int, security: distributed.Security | None = None) -> None:
    with distributed.Client(address, security=security, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(count, timeout=60)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One scheduler and one `dask worker` with 2 processes x 2 threads, no resources."""
    started = Processes(tmp_path_factory.mktemp("shared-cluster"))
    try:
        port = start_scheduler(started)
        address = f"tcp://127.0.0.1:{port}"
        started.start("worker", [*DASK_WORKER, address, "--nworkers", "2", "--nthreads", "2", *LOOPBACK_WORKER])
        wait_for_workers(address, 2)
        yield address
    finally:
        started.stop()


@task
def square(x):
    return x * x


@task
def total(values):
    return sum(values)


@task
def where_am_i() -> str:
    return distributed.get_worker().address


# --- TLS ---------------------------------------------------------------------------------------


def make_certificates(directory: Path) -> dict[str, Path]:
    """A certificate authority, and a certificate + key signed by it for the scheduler and
    workers ("node") and one for the driver ("client"), all for 127.0.0.1, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dagrun test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for name in ("node", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dagrun {name}")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0]).not_valid_after(validity[1])
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            ]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([
                ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
            ]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}-key"] = directory / f"{name}-key.pem"
        paths[f"{name}-key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
        ))
    return paths


def test_a_flow_runs_over_tls_with_a_yaml_security_block(processes, tmp_path, monkeypatch):
    configs = tmp_path / "cluster_configs"
    certificates = make_certificates(configs / "certs")
    node_tls = [
        "--tls-ca-file", str(certificates["ca"]),
        "--tls-cert", str(certificates["node"]), "--tls-key", str(certificates["node-key"]),
    ]
    port = start_scheduler(processes, "--protocol", "tls", *node_tls)
    address = f"tls://127.0.0.1:{port}"
    processes.start("worker", [*DASK_WORKER, address, "--nworkers", "1", "--nthreads", "2", *LOOPBACK_WORKER, *node_tls])
    (configs / "secure.yaml").write_text(textwrap.dedent(f"""\
        address: {address}
        security:           # relative to this file
          ca_file: certs/ca.pem
          cert: certs/client.pem
          key: certs/client-key.pem
        connect_timeout: 30
    """))
    monkeypatch.chdir(tmp_path)
    executor = DaskExecutor.from_config("secure")
    wait_for_workers(address, 1, executor.security)

    @flow(executor="secure")
    def pipeline():
        return total(square.map(range(4))), where_am_i()

    result, worker = pipeline()
    assert result == 14
    assert worker.startswith("tls://127.0.0.1:")  # the task ran on a worker reached over TLS

    # Without TLS files for the client, dagrun says how to add them before connecting.
    (configs / "no-security.yaml").write_text(f"address: {address}\n")
    with pytest.raises(ConfigError, match=r"no-security.yaml: address .* is tls:// but no TLS files .* 'security:' block"):
        DaskExecutor.from_config("no-security")


# --- the worker version check ------------------------------------------------------------------


def test_version_mismatch_names_the_worker_and_nothing_is_submitted(processes, tmp_path):
    # A worker whose environment has dagrun 0.0.1 installed: a distribution's metadata found
    # first on its sys.path, which is what Dask's version report reads.
    other_site = tmp_path / "other-site-packages"
    (other_site / "dagrun-0.0.1.dist-info").mkdir(parents=True)
    (other_site / "dagrun-0.0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dagrun\nVersion: 0.0.1\n"
    )
    port = start_scheduler(processes)
    address = f"tcp://127.0.0.1:{port}"
    pythonpath = os.pathsep.join(filter(None, [str(other_site), os.environ.get("PYTHONPATH")]))
    processes.start(
        "old-worker", [*DASK_WORKER, address, "--nworkers", "1", "--nthreads", "1", *LOOPBACK_WORKER],
        env={**os.environ, "PYTHONPATH": pythonpath},
        cwd=tmp_path,  # not the checkout, whose dagrun.egg-info would be found first
    )
    wait_for_workers(address, 1)
    marker = tmp_path / "ran"

    @task
    def touch(path):
        Path(path).write_text("ran")

    @flow(executor=DaskExecutor(address=address))
    def pipeline():
        touch(str(marker))

    with pytest.raises(ConfigError) as caught:
        pipeline()
    message = str(caught.value)
    assert "worker tcp://127.0.0.1:" in message
    assert "has dagrun 0.0.1 (driver: 0.1.0)" in message
    assert "nothing was submitted" in message
    time.sleep(0.5)
    assert not marker.exists()


def test_version_comparison_covers_python_minor_cloudpickle_and_missing_dagrun():
    driver = {"packages": {"python": "3.11.7.final.0", "dagrun": "0.1.0", "cloudpickle": "3.1.3"}}
    versions = {
        "client": driver,
        "workers": {
            "tcp://10.0.0.1:1": {"packages": {"python": "3.11.2.final.0", "dagrun": "0.1.0", "cloudpickle": "3.1.3"}},
            "tcp://10.0.0.2:1": {"packages": {"python": "3.12.1.final.0", "dagrun": "0.1.0", "cloudpickle": "3.0.0"}},
            "tcp://10.0.0.3:1": {"packages": {"python": "3.11.7.final.0", "dagrun": None, "cloudpickle": "3.1.3"}},
        },
    }
    assert version_mismatches(versions) == [
        "worker tcp://10.0.0.2:1 has python 3.12 (driver: 3.11), cloudpickle 3.0.0 (driver: 3.1.3)",
        "worker tcp://10.0.0.3:1 has dagrun missing (driver: 0.1.0)",
    ]  # a different patch release of Python is fine


# --- placement by resources --------------------------------------------------------------------


def test_a_task_with_resources_waits_for_a_worker_that_has_them(shared_cluster, processes, tmp_path):
    marker = tmp_path / "gpu-task-ran"

    @task(resources={"GPU": 1})
    def on_gpu(path):
        Path(path).write_text(distributed.get_worker().name)
        return distributed.get_worker().name

    def scheduler_states():
        with distributed.Client(shared_cluster, timeout=30, set_as_default=False) as client:
            return client.run_on_scheduler(
                lambda dask_scheduler: {str(key): t.state for key, t in dask_scheduler.tasks.items()}
            )

    @flow(executor=DaskExecutor(address=shared_cluster))
    def pipeline():
        future = on_gpu(str(marker))
        wait_until(
            lambda: any(key.startswith("on_gpu-") and state == "no-worker"
                        for key, state in scheduler_states().items()),
            what="the GPU task waiting for a worker with GPU",
        )
        time.sleep(1.0)  # the two workers without GPU had every chance to take it
        assert not marker.exists()
        processes.start("gpu-worker", [
            *DASK_WORKER, shared_cluster, "--nworkers", "1", "--nthreads", "1",
            "--resources", "GPU=1", "--name", "gpu-worker", *LOOPBACK_WORKER,
        ])
        return future, square(3)

    assert pipeline() == ("gpu-worker", 9)
    assert marker.read_text() == "gpu-worker"


# --- tag concurrency limits --------------------------------------------------------------------

DRIVER = '''
import json, sys, time
from pathlib import Path

from dagrun import flow, task, unmapped
from dagrun.executors import DaskExecutor

address, windows, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


def record(kind, index):
    start = time.time()
    time.sleep(0.4)
    (windows / f"{kind}-{name}-{index}.json").write_text(json.dumps([start, time.time()]))
    return index


@task(tags=["serial", "reports"])
def limited(index):
    return record("limited", index)


@task(tags=["reports"])
def unlimited(index):
    return record("unlimited", index)


@flow(executor=DaskExecutor(address=address))
def nightly():
    (windows / f"ready-{name}").write_text("")
    while len(list(windows.glob("ready-*"))) < 2:  # both drivers submit at the same time
        time.sleep(0.02)
    return limited.map(range(3)), unlimited.map(range(3))


if __name__ == "__main__":
    print(json.dumps(nightly()))
'''


def read_windows(directory: Path, kind: str) -> list[tuple[float, float, str]]:
    return sorted(
        (*json.loads(path.read_text()), path.stem)
        for path in directory.glob(f"{kind}-*.json")
    )


def test_concurrency_limit_one_serializes_a_tag_across_two_concurrent_flows(shared_cluster, processes, tmp_path):
    result = dagrun("concurrency", "set", "serial", "1")
    assert result.returncode == 0, result.stderr
    assert "Tag 'serial': at most 1 task run at once" in result.stdout
    assert dict(read_limits()) == {"serial": 1}  # "reports" has no limit
    windows = tmp_path / "windows"
    windows.mkdir()
    script = tmp_path / "nightly.py"
    script.write_text(DRIVER)
    drivers = [
        processes.start(name, [sys.executable, str(script), shared_cluster, str(windows), name])
        for name in ("driver-a", "driver-b")
    ]
    for process in drivers:
        assert process.wait(timeout=120) == 0, processes.log("driver-a") + processes.log("driver-b")
    for name in ("driver-a", "driver-b"):
        assert json.loads(processes.log(name).strip().splitlines()[-1]) == [[0, 1, 2], [0, 1, 2]]

    limited = read_windows(windows, "limited")
    assert len(limited) == 6 and {stem.split("-")[2] for *_, stem in limited} == {"a", "b"}
    for (_, end, before), (start, _, after) in itertools.pairwise(limited):
        assert start >= end, f"{after} started before {before} ended"
    # The control: the same cluster ran the tasks without a limit side by side.
    unlimited = read_windows(windows, "unlimited")
    assert len(unlimited) == 6
    assert any(start < end for (_, end, _), (start, _, _) in itertools.pairwise(unlimited))
    # The drivers say why their tasks waited.
    logs = processes.log("driver-a") + processes.log("driver-b")
    assert "Waiting for a concurrency slot of tag 'serial' (at most 1 run at once)" in logs


def test_concurrency_limits_cli_lists_changes_and_deletes(monkeypatch):
    def ok(*args: str) -> str:
        result = dagrun("concurrency", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "No concurrency limits" in ok("ls")
    ok("set", "db", "2")
    ok("set", "db", "3")
    ok("set", "api", "1")
    listing = ok("ls").splitlines()
    assert listing[0].split() == ["TAG", "LIMIT", "UPDATED"]
    assert [line.split()[:2] for line in listing[1:]] == [["api", "1"], ["db", "3"]]
    as_json = json.loads(ok("ls", "--json"))
    assert [(row["tag"], row["limit"]) for row in as_json] == [("api", 1), ("db", 3)]
    assert ok("delete", "api").strip() == "Tag 'api': no concurrency limit"
    missing = dagrun("concurrency", "delete", "api")
    assert (missing.returncode, missing.stderr) == (
        2, "Error: No concurrency limit for tag 'api' (see `dagrun concurrency ls`)\n"
    )
    zero = dagrun("concurrency", "set", "db", "0")
    assert zero.returncode == 2 and "whole number >= 1" in zero.stderr
    assert len(zero.stderr.splitlines()) == 1 and "Traceback" not in zero.stderr
    assert dict(read_limits()) == {"db": 3}
    # A changed limit is a different semaphore: Dask refuses to resize a registered one.
    assert semaphore_name("db", 3) != semaphore_name("db", 2)


# --- worker_env, scheduler_options, worker TTL and adapt on clusters dagrun starts ---------------


def test_worker_env_reaches_workers_of_a_local_cluster_from_a_yaml_config(tmp_path, monkeypatch):
    (tmp_path / "cluster_configs").mkdir()
    (tmp_path / "cluster_configs" / "managed.yaml").write_text(textwrap.dedent("""\
        cluster:
          class: distributed.LocalCluster
          kwargs: {n_workers: 1, threads_per_worker: 1, host: 127.0.0.1, dashboard_address: "127.0.0.1:0"}
        adapt: {minimum: 1, maximum: 2}
        worker_env:
          DAGRUN_GREETING: hello from the config
        scheduler_options:
          allowed_failures: 7
    """))
    monkeypatch.chdir(tmp_path)

    @task
    def greeting():
        return os.environ["DAGRUN_GREETING"]

    @flow(executor="managed")
    def pipeline():
        return greeting()

    assert pipeline() == "hello from the config"

    session = DaskExecutor.from_config("managed").start(on_log=lambda line: None)
    try:
        settings = session.client.run_on_scheduler(
            lambda dask_scheduler: (dask_scheduler.worker_ttl, dask_scheduler.allowed_failures)
        )
    finally:
        session.shutdown()
    assert settings == (60, 7)  # dagrun's worker TTL, and the config's scheduler option


def test_worker_env_and_worker_ttl_for_a_slurm_cluster(tmp_path, monkeypatch):
    dask_jobqueue = require_module("dask_jobqueue", "dask-jobqueue", "pip install -e '.[test]'")
    monkeypatch.chdir(tmp_path)
    executor = DaskExecutor(
        cluster="dask_jobqueue.SLURMCluster",
        cluster_kwargs={"cores": 1, "memory": "1GB", "job_script_prologue": ["source /opt/venv/bin/activate"]},
        worker_env={"OMP_NUM_THREADS": "1", "GREETING": "hello world"},
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
    )
    cluster_class, kwargs = executor.cluster_arguments()
    assert cluster_class is dask_jobqueue.SLURMCluster
    assert kwargs["scheduler_options"]["host"] == "127.0.0.1"
    session = executor.start(on_log=lambda line: None)  # no workers requested: nothing submitted
    try:
        lines = session._cluster.job_script().splitlines()
        worker_ttl = session.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl)
    finally:
        session.shutdown()
    prologue = lines.index("source /opt/venv/bin/activate")
    assert lines[prologue + 1 : prologue + 3] == ["export OMP_NUM_THREADS=1", "export GREETING='hello world'"]
    assert worker_ttl == 60


def test_worker_env_for_kubernetes_and_ssh_and_refusals_name_the_class():
    kubernetes = require_module("dask_kubernetes.operator", "dask-kubernetes", "pip install -e '.[test]'")
    common = {"scheduler_options": {}, "source": "lab.yaml"}
    as_mapping = managed_cluster_kwargs(
        kubernetes.KubeCluster, {"env": {"A": "1", "B": "old"}}, worker_env={"B": "2"}, **common
    )
    assert as_mapping["env"] == {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "60s", "A": "1", "B": "2"}
    as_list = managed_cluster_kwargs(
        kubernetes.KubeCluster, {"env": [{"name": "B", "value": "old"}]}, worker_env={"B": "2"}, **common
    )
    assert as_list["env"] == [
        {"name": "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "value": "60s"}, {"name": "B", "value": "2"},
    ]
    ssh = managed_cluster_kwargs(
        distributed.SSHCluster, {"worker_options": {"nthreads": 2}}, worker_env={"X": "1"},
        scheduler_options={"port": 0}, source="lab.yaml",
    )
    assert ssh["worker_options"] == {"nthreads": 2, "env": {"X": "1"}}
    assert ssh["scheduler_options"] == {"port": 0}
    with pytest.raises(ConfigError, match=r"lab.yaml: worker_env.GREETING: .* cannot contain a single quote"):
        managed_cluster_kwargs(
            distributed.SSHCluster, {}, worker_env={"GREETING": "it's"}, scheduler_options={}, source="lab.yaml"
        )
    with pytest.raises(ConfigError, match=r"lab.yaml: scheduler_options is not supported for cluster class 'KubeCluster'"):
        managed_cluster_kwargs(kubernetes.KubeCluster, {}, worker_env={}, scheduler_options={"port": 0}, source="lab.yaml")
    with pytest.raises(ConfigError, match=r"worker_env needs worker processes"):
        managed_cluster_kwargs(distributed.LocalCluster, {"processes": False}, worker_env={"X": "1"}, **common)
    with pytest.raises(ConfigError, match=r"'worker_env' needs a cluster that dagrun starts"):
        DaskExecutor(address="tcp://127.0.0.1:8786", worker_env={"X": "1"})


# --- SSH ---------------------------------------------------------------------------------------


def sshd_binary() -> str | None:
    """sshd by absolute path (it refuses to start otherwise); /usr/sbin is not on every PATH."""
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if os.access(found, os.X_OK) else None


@dataclasses.dataclass
class LoopbackSshd:
    """A private sshd on 127.0.0.1 that lets the current user in with `client_key` only."""

    port: int
    username: str
    client_key: Path
    known_hosts: Path  # holds this sshd's host key, so the client verifies the server
    process: subprocess.Popen
    log: Path

    def started_through_it(self) -> set[int]:
        """Pids of the running processes started through this sshd: its descendants, and any
        process whose environment names one of its sessions (e.g. a worker whose session
        ended under it). sshd sets SSH_CONNECTION="client port server port" in a session."""
        pids = set()
        try:
            pids.update(child.pid for child in psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        for process in psutil.process_iter():
            try:
                connection = process.environ().get("SSH_CONNECTION", "")
            except (psutil.Error, OSError):
                continue
            if connection.split()[-1:] == [str(self.port)]:
                pids.add(process.pid)
        return {pid for pid in pids if running(pid)}

    def stop(self) -> None:
        """End sshd and everything started through it (sshd puts each connection in a session
        of its own, so the process group of sshd alone is not enough)."""
        leftovers = self.started_through_it()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        leftovers |= self.started_through_it()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            leftovers = wait_until_gone(leftovers, timeout=10)


def running(pid: int) -> bool:
    """Whether `pid` is alive; a zombie (exited, not yet reaped by its parent) is not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def loopback_sshd(tmp_path: Path) -> Iterator[LoopbackSshd]:
    sshd = sshd_binary()
    require_part("OpenSSH's server (sshd)", sshd is not None, "apt-get install openssh-server")
    require_module("asyncssh", "asyncssh", "pip install -e '.[test]'")
    assert sshd is not None
    directory = tmp_path / "sshd"
    directory.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dagrun-test-{name}", "-f", str(directory / name)],
            check=True, capture_output=True,
        )
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    port = free_port()
    key_type, key = (directory / "host_key.pub").read_text().split()[:2]
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    as_root = os.geteuid() == 0
    if as_root:  # sshd running as root drops privileges into this empty directory
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    config = directory / "sshd_config"
    config.write_text(textwrap.dedent(f"""\
        ListenAddress 127.0.0.1
        Port {port}
        HostKey {directory / "host_key"}
        PidFile {directory / "sshd.pid"}
        AuthorizedKeysFile {directory / "authorized_keys"}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        PermitRootLogin {"prohibit-password" if as_root else "no"}
        PrintMotd no
        LogLevel VERBOSE
    """))
    log = directory / "sshd.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = LoopbackSshd(
        port=port, username=pwd.getpwuid(os.getuid()).pw_name, client_key=directory / "client_key",
        known_hosts=directory / "known_hosts", process=process, log=log,
    )
    try:
        # Its own log line, not a probe connection: a probe would be an unauthenticated client.
        listening = f"Server listening on 127.0.0.1 port {port}"
        wait_until(
            lambda: process.poll() is not None or listening in log.read_text(errors="replace"),
            timeout=15, what="sshd listening",
        )
        assert process.poll() is None, f"sshd exited with {process.returncode}:\n{log.read_text(errors='replace')}"
        yield server
    finally:
        server.stop()


@task
def on_ssh_worker() -> dict:
    """Where this task runs: the worker, its session's SSH_CONNECTION, its ancestors' pids,
    and the worker TTL of the scheduler it belongs to."""
    return {
        "worker": distributed.get_worker().address,
        "ssh_connection": os.environ.get("SSH_CONNECTION"),
        "dagrun_home": os.environ.get("DAGRUN_HOME"),
        "pid": os.getpid(),
        "ancestors": [parent.pid for parent in psutil.Process().parents()],
        "worker_ttl": distributed.get_client().run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl),
    }


def test_ssh_config_against_an_sshd_on_loopback(loopback_sshd, dagrun_home, tmp_path, monkeypatch):
    sshd = loopback_sshd
    # The shape of cluster_configs/ssh.yaml, for a scheduler and one worker host, both this
    # machine reached over SSH; every listening socket stays on 127.0.0.1.
    (tmp_path / "cluster_configs").mkdir()
    (tmp_path / "cluster_configs" / "ssh.yaml").write_text(textwrap.dedent(f"""\
        cluster:
          class: distributed.SSHCluster
          kwargs:
            hosts: [127.0.0.1, 127.0.0.1]
            connect_options:
              username: {sshd.username}
              port: {sshd.port}
              client_keys: [{json.dumps(str(sshd.client_key))}]
              known_hosts: {json.dumps(str(sshd.known_hosts))}
            worker_options:
              n_workers: 1
              nthreads: 2
              host: 127.0.0.1
            scheduler_options:
              host: 127.0.0.1
              port: 0
              dashboard_address: "127.0.0.1:0"
            remote_python: {json.dumps(sys.executable)}
        worker_env:
          DAGRUN_HOME: {json.dumps(str(dagrun_home))}
        connect_timeout: 30
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGRUN_CLUSTER", "ssh")
    children_before = child_processes()
    during_run: dict[int, str] = {}  # pid -> command line of what ran through sshd

    @flow(name="over_ssh")
    def pipeline():
        where = on_ssh_worker()
        where.result()  # the cluster is up and has run a task: see what runs through sshd
        for pid in sshd.started_through_it():
            with contextlib.suppress(psutil.Error):
                during_run[pid] = " ".join(psutil.Process(pid).cmdline())
        return total(square.map(range(4))), where

    try:
        result, where = pipeline()
    except Exception:
        print(sshd.log.read_text(errors="replace"))  # shown with the failure: why a login failed
        raise

    assert result == 14
    # The task ran in a worker process that sshd started for a session from 127.0.0.1.
    assert where["worker"].startswith("tcp://127.0.0.1:")
    assert (where["ssh_connection"] or "").split()[2:] == ["127.0.0.1", str(sshd.port)], where
    assert sshd.process.pid in where["ancestors"], where
    assert where["dagrun_home"] == str(dagrun_home)  # worker_env reaches the SSH workers
    assert where["worker_ttl"] == 60  # dagrun's scheduler settings reach a scheduler started over SSH
    # The scheduler and the worker host each ran `dask_spec` in a session of their own.
    specs = [command for command in during_run.values() if "distributed.cli.dask_spec" in command]
    assert len(specs) == 2, during_run
    assert any("distributed.Scheduler" in command for command in specs), specs
    assert any("distributed.Nanny" in command for command in specs), specs
    with HistoryStore.from_env() as store:
        [run] = store.list_flow_runs(flow_name="over_ssh")
        task_runs = store.get_flow_run(run["id"])["task_runs"]
    assert run["state"] == "Completed"
    assert len(task_runs) == 6
    assert {task_run["worker"] for task_run in task_runs} == {where["worker"]}

    # The run stopped the cluster: nothing started through sshd is left, nor any Dask process.
    assert where["pid"] in during_run
    wait_until(lambda: not sshd.started_through_it(), timeout=20, what="processes started over SSH gone")
    assert not {pid for pid in child_processes() - children_before if running(pid)}
