"""Separate hosts on this machine, for tests: one network namespace per host, each with its own
address on a private bridge, its own host name (a UTS namespace) and an /etc/hosts that knows
every host of the set, plus TLS certificates for those names from a throwaway authority.

The bridge lives in a namespace of its own (the "switch"), so nothing is added to this
machine's own network and deleting the namespaces removes every link. Traffic stays inside
them: the addresses (10.213.7.0/24) exist only there.

    with NetworkHosts.create(["scheduler", "worker-a"]) as hosts:
        hosts.start("scheduler", ["dask", "scheduler", ...], log=path)
        hosts.disconnect("worker-a")   # its link to the switch goes down: a partition
        hosts.reconnect("worker-a")
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

DOMAIN = "dagrun.test"  # a reserved name: never resolves outside these namespaces
SUBNET = "10.213.7"
INSTALL_HINT = "apt-get install -y iproute2 util-linux"


def namespaces_missing() -> str | None:
    """Why network namespaces cannot be used here (None: they can), found by creating one."""
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"network namespaces missing ({tool} not found): {INSTALL_HINT}"
    probe = f"dagrun-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces missing (ip netns add: {made.stderr.strip()}): run as root with CAP_SYS_ADMIN"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclasses.dataclass
class NetworkHosts:
    token: str
    addresses: dict[str, str]  # host -> IPv4 address
    processes: list[subprocess.Popen] = dataclasses.field(default_factory=list)

    @classmethod
    def create(cls, hosts: list[str]) -> NetworkHosts:
        token = secrets.token_hex(3)
        made = cls(token, {host: f"{SUBNET}.{index + 2}" for index, host in enumerate(hosts)})
        try:
            switch = made.namespace("switch")
            _ip("netns", "add", switch)
            _ip("-n", switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", switch, "link", "set", "br0", "up")
            hosts_file = "127.0.0.1 localhost\n" + "".join(
                f"{address} {made.fqdn(host)} {host}\n" for host, address in made.addresses.items()
            )
            for index, (host, address) in enumerate(made.addresses.items()):
                namespace = made.namespace(host)
                _ip("netns", "add", namespace)
                etc = Path("/etc/netns") / namespace  # `ip netns exec` mounts these over /etc
                etc.mkdir(parents=True, exist_ok=True)
                (etc / "hosts").write_text(hosts_file)
                inside, port = f"dr{token}h{index}", made.port(host)
                _ip("link", "add", inside, "type", "veth", "peer", "name", port)
                _ip("link", "set", inside, "netns", namespace)
                _ip("link", "set", port, "netns", switch)
                _ip("-n", switch, "link", "set", port, "master", "br0")
                _ip("-n", switch, "link", "set", port, "up")
                _ip("-n", namespace, "link", "set", inside, "name", "eth0")
                _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", namespace, "link", "set", "eth0", "up")
                _ip("-n", namespace, "link", "set", "lo", "up")
        except BaseException:
            made.delete()
            raise
        return made

    def namespace(self, host: str) -> str:
        return f"dagrun-{self.token}-{host}"

    def port(self, host: str) -> str:
        """The host's port on the switch's bridge."""
        return f"dr{self.token}p{list(self.addresses).index(host)}"

    @staticmethod
    def fqdn(host: str) -> str:
        return f"{host}.{DOMAIN}"

    def command(self, host: str, command: list[str]) -> list[str]:
        """`command` run on `host`: in its network namespace, with its host name."""
        return [
            "ip", "netns", "exec", self.namespace(host), "unshare", "--uts", "--",
            "sh", "-c", 'hostname "$0" && exec "$@"', self.fqdn(host), *command,
        ]

    def start(self, host: str, command: list[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as output:
            process = subprocess.Popen(
                self.command(host, command), env=env or dict(os.environ), cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.processes.append(process)
        return process

    def run(self, host: str, command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """Run `command` on `host` to its end (killed at `timeout`), output captured as text."""
        return subprocess.run(self.command(host, command), capture_output=True, text=True, timeout=timeout, **kwargs)

    def disconnect(self, host: str) -> None:
        """Cut `host` off the network (its switch port goes down): its connections hang, as
        in a real partition, rather than close."""
        _ip("-n", self.namespace("switch"), "link", "set", self.port(host), "down")

    def reconnect(self, host: str) -> None:
        _ip("-n", self.namespace("switch"), "link", "set", self.port(host), "up")

    def delete(self) -> None:
        """Stop every process in the namespaces (started here or not), then delete them."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)  # a frozen one must be able to exit
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for host in [*self.addresses, "switch"]:
            namespace = self.namespace(host)
            listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
            for pid in listed.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / namespace, ignore_errors=True)

    def __enter__(self) -> NetworkHosts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.delete()


# --- certificates ------------------------------------------------------------------------------


def make_authority(directory: Path, name: str = "dagrun test CA") -> tuple[object, object, Path]:
    """A throwaway certificate authority: (key, certificate, path of its PEM file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name.replace(' ', '-')}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate, path


def issue(authority: tuple[object, object, Path], directory: Path, name: str,
          dns_names: list[str], addresses: list[str]) -> tuple[Path, Path]:
    """A certificate + key for `name` valid for these host names and addresses, signed by
    `authority`, for servers and clients alike: (certificate path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key, ca_certificate, _ = authority
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(dns) for dns in dns_names]
            + [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
        ), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    certificate_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))
    return certificate_path, key_path
