"""A flow across separate hosts over TLS: the scheduler, two workers and the driver each in
their own network namespace (own address and host name, on a private bridge; see
`network_hosts`), with certificates for those names from a throwaway authority and `tls://`
everywhere. The driver is the real `dagrun run`, started on its own host.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dagrun.history import HistoryStore
from network_hosts import NetworkHosts, issue, make_authority, namespaces_missing

HOSTS = ["scheduler", "worker-a", "worker-b", "driver"]
SCHEDULER_PORT = 8786
DASK_SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
DASK_WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


@dataclass
class TlsCluster:
    hosts: NetworkHosts
    address: str  # tls://scheduler.dagrun.test:8786
    certificates: Path
    logs: Path
    workers: dict[str, object]  # host -> its `dask worker` process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def config(self, directory: Path, name: str, text: str) -> None:
        (directory / "cluster_configs").mkdir(parents=True, exist_ok=True)
        (directory / "cluster_configs" / f"{name}.yaml").write_text(textwrap.dedent(text))

    def secure_config(self, directory: Path) -> None:
        """`cluster_configs/secure.yaml`: this scheduler over TLS with the driver's certificate."""
        certs = self.certificates
        self.config(directory, "secure", f"""\
            address: {self.address}
            security:
              ca_file: {certs / "dagrun-test-CA.pem"}
              cert: {certs / "driver.pem"}
              key: {certs / "driver-key.pem"}
            connect_timeout: 20
        """)

    def dagrun(self, directory: Path, *args: str, timeout: float = 120):
        """`dagrun ARGS...` run on the driver host, in `directory`."""
        return self.hosts.run("driver", [shutil.which("dagrun") or "dagrun", *args], timeout=timeout, cwd=directory)


def require_namespaces() -> None:
    problem = namespaces_missing()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)


def wait_for_log(path: Path, text: str, count: int = 1, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} x{count} not in {path.name} within {timeout} s:\n"
                       f"{path.read_text(errors='replace') if path.exists() else '(no log)'}")


def start_tls_cluster(directory: Path, *, worker_ttl: str | None = None, worker_args: tuple[str, ...] = ()
                      ) -> TlsCluster:
    """Namespaces for HOSTS, certificates for their names, a TLS scheduler and two workers
    (worker-a with resource HOST_A=1, worker-b with HOST_B=1). The caller deletes `hosts`."""
    hosts = NetworkHosts.create(HOSTS)
    try:
        certificates = directory / "certs"
        authority = make_authority(certificates)
        for host in HOSTS:
            issue(authority, certificates, host, [hosts.fqdn(host), host], [hosts.addresses[host]])
        address = f"tls://{hosts.fqdn('scheduler')}:{SCHEDULER_PORT}"
        logs = directory / "logs"
        cluster = TlsCluster(hosts, address, certificates, logs, {})

        def tls(host: str) -> list[str]:
            return ["--tls-ca-file", str(authority[2]), "--tls-cert", str(certificates / f"{host}.pem"),
                    "--tls-key", str(certificates / f"{host}-key.pem")]

        env = dict(os.environ)
        if worker_ttl is not None:
            env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = worker_ttl
        hosts.start("scheduler", [
            *DASK_SCHEDULER, "--protocol", "tls", "--host", hosts.fqdn("scheduler"), "--port", str(SCHEDULER_PORT),
            "--dashboard-address", "127.0.0.1:0", "--no-show", *tls("scheduler"),
        ], logs / "scheduler.log", env=env)
        wait_for_log(logs / "scheduler.log", "Scheduler at:")
        for host, resource in (("worker-a", "HOST_A"), ("worker-b", "HOST_B")):
            cluster.workers[host] = hosts.start(host, [
                *DASK_WORKER, address, "--host", hosts.fqdn(host), "--name", host, "--nthreads", "2",
                "--resources", f"{resource}=1", "--no-dashboard", *worker_args, *tls(host),
            ], logs / f"{host}.log")
        for host in ("worker-a", "worker-b"):
            wait_for_log(logs / f"{host}.log", "Registered to:")
        return cluster
    except BaseException:
        hosts.delete()
        raise


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    require_namespaces()
    cluster = start_tls_cluster(tmp_path_factory.mktemp("tls-hosts"))
    try:
        yield cluster
    finally:
        cluster.hosts.delete()


FLOW = '''
import json, socket
from pathlib import Path

import distributed
from dagrun import flow, task


@task(resources={"HOST_A": 1})
def produce(n):
    return {"data": list(range(n)), "worker": distributed.get_worker().address, "host": socket.gethostname()}


@task(resources={"HOST_B": 1})
def consume(produced):
    worker = distributed.get_worker()
    return {
        "total": sum(produced["data"]),
        "produced_on": produced["worker"],
        "produced_host": produced["host"],
        "worker": worker.address,
        "host": socket.gethostname(),
        "fetched_from": sorted({transfer["who"] for transfer in worker.transfer_incoming_log}),
    }


@flow(name="across_hosts")
def across_hosts(n: int = 1000):
    result = consume(produce(n)).result()
    Path("result.json").write_text(json.dumps(result))
'''


def test_a_flow_runs_across_hosts_over_tls_and_data_moves_worker_to_worker(tls_cluster, tmp_path, dagrun_home):
    cluster = tls_cluster
    cluster.secure_config(tmp_path)
    (tmp_path / "flow.py").write_text(FLOW)
    done = cluster.dagrun(tmp_path, "run", "flow.py", "--cluster", "secure")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    addresses = cluster.hosts.addresses
    assert result["total"] == sum(range(1000))
    # Each task ran on its own host, reached over TLS at that host's address.
    assert result["produced_on"].startswith(f"tls://{addresses['worker-a']}:"), result
    assert result["worker"].startswith(f"tls://{addresses['worker-b']}:"), result
    assert (result["produced_host"], result["host"]) == ("worker-a.dagrun.test", "worker-b.dagrun.test")
    # worker-b fetched the data from worker-a itself: it never went through the driver.
    assert result["fetched_from"] == [result["produced_on"]], result
    with HistoryStore.from_env() as store:
        [run] = store.list_flow_runs(flow_name="across_hosts")
        task_runs = store.get_flow_run(run["id"])["task_runs"]
    assert run["state"] == "Completed"
    assert {t["task_name"]: t["worker"] for t in task_runs} == {
        "produce": result["produced_on"], "consume": result["worker"],
    }


def test_plain_tcp_to_another_host_is_refused_unless_insecure(tls_cluster, tmp_path):
    cluster = tls_cluster
    (tmp_path / "flow.py").write_text(FLOW)
    plain = f"tcp://{cluster.hosts.fqdn('scheduler')}:{SCHEDULER_PORT}"
    refused = cluster.dagrun(tmp_path, "run", "flow.py", "--address", plain)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "refusing plain tcp://" in line and "insecure: true" in line, line
    assert not (tmp_path / "result.json").exists()

    # With `insecure: true` dagrun does connect over plain TCP: this scheduler, which speaks
    # only TLS, ends it with one line naming the address.
    cluster.config(tmp_path, "plain", f"address: {plain}\ninsecure: true\nconnect_timeout: 5\n")
    attempted = cluster.dagrun(tmp_path, "run", "flow.py", "--cluster", "plain")
    assert attempted.returncode == 2, attempted.stderr
    [line] = attempted.stderr.strip().splitlines()
    assert line.startswith("Error: cluster_configs/plain.yaml: cannot connect to the Dask scheduler at " f"{plain} within 5 s: "), line
    assert not (tmp_path / "result.json").exists()


def test_a_client_certificate_from_another_authority_ends_the_run_with_one_line(tls_cluster, tmp_path):
    cluster = tls_cluster
    other = make_authority(tmp_path / "other-ca", name="other CA")
    cert, key = issue(other, tmp_path / "other-ca", "driver", ["driver.dagrun.test"], [])
    cluster.config(tmp_path, "stranger", f"""\
        address: {cluster.address}
        security:
          ca_file: {cluster.certificates / "dagrun-test-CA.pem"}
          cert: {cert}
          key: {key}
        connect_timeout: 20
    """)
    (tmp_path / "flow.py").write_text(FLOW)
    started = time.monotonic()
    refused = cluster.dagrun(tmp_path, "run", "flow.py", "--cluster", "stranger")
    elapsed = time.monotonic() - started
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert f"cannot connect to the Dask scheduler at {cluster.address} within " in line, line
    # TLS 1.3: the client reads the scheduler's alert, or, when the close wins the race, an EOF.
    assert "TLS error: [SSL: TLSV1_ALERT_UNKNOWN_CA]" in line or "may not trust this client's certificate" in line, line
    assert "security block" in line
    assert elapsed < 15  # refused at the handshake, not after the 20 s connect timeout
    assert not (tmp_path / "result.json").exists()
