"""Cluster configs: the shipped files load and build real clusters' specs, names resolve in the
documented order, and every mistake fails before anything starts, naming file, line and key."""

from __future__ import annotations

import datetime
import inspect
import subprocess
import sys
import textwrap
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from real_parts import require_module

from dagrun.cluster_config import (
    ClusterConfig,
    check_address_allowed,
    load_cluster_config,
    resolve_cluster_config_path,
    security_kwargs,
)
from dagrun.errors import ConfigError
from dagrun.executors.cluster_checks import extra_for_module, import_cluster_class

REPOSITORY = Path(__file__).resolve().parents[1]
# The installed console script: next to this interpreter (a venv's bin/), else on PATH.
DAGRUN = next((str(p) for p in [Path(sys.executable).with_name("dagrun")] if p.exists()), "dagrun")
SHIPPED = ["local", "remote", "ssh", "kubernetes", "slurm"]
TOP_LEVEL_KEYS = (
    "address, cluster, adapt, security, insecure, worker_env, scheduler_options, connect_timeout"
)


def write_config(directory: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def in_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(REPOSITORY)
    monkeypatch.setenv("DAGRUN_HOME", str(tmp_path / "home"))


# --- the shipped files -------------------------------------------------------------------------


def test_every_shipped_config_is_tested() -> None:
    assert sorted(path.stem for path in (REPOSITORY / "cluster_configs").glob("*.yaml")) == sorted(
        SHIPPED
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_by_name(name: str, in_repository: None) -> None:
    config = load_cluster_config(name)
    assert config.source == f"cluster_configs/{name}.yaml"
    assert (config.address is None) != (config.cluster_class is None)


def test_local_config_is_the_default_local_cluster(in_repository: None) -> None:
    config = load_cluster_config("local")
    assert config.cluster_class == "distributed.LocalCluster"
    assert dict(config.cluster_kwargs) == {
        "n_workers": 2,
        "threads_per_worker": 4,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }
    assert inspect.signature(import_cluster_class(config.cluster_class, source="test")).bind(
        **config.cluster_kwargs
    )


def test_remote_config_attaches_over_tls_with_paths_next_to_the_file(in_repository: None) -> None:
    config = load_cluster_config("remote")
    assert config.address == "tls://scheduler.example.com:8786"
    certs = REPOSITORY / "cluster_configs" / "certs"
    assert dict(config.security or {}) == {
        "ca_file": str(certs / "ca.pem"),
        "cert": str(certs / "client.pem"),
        "key": str(certs / "client-key.pem"),
    }
    assert config.connect_timeout == 60.0


def test_ssh_config_names_sshcluster_arguments(in_repository: None) -> None:
    from distributed import SSHCluster

    config = load_cluster_config("ssh")
    assert config.cluster_class == "distributed.SSHCluster"
    kwargs = config.cluster_kwargs
    assert kwargs["hosts"][0] == "scheduler.example.com"
    assert len(kwargs["hosts"]) >= 2
    assert {"connect_options", "worker_options", "scheduler_options"} <= set(kwargs)
    inspect.signature(SSHCluster).bind(**kwargs)  # every key is a real SSHCluster argument


def test_slurm_config_renders_a_job_script(in_repository: None, monkeypatch, tmp_path) -> None:
    dask_jobqueue = require_module("dask_jobqueue", "dask-jobqueue", "pip install -e '.[test]'")
    config = load_cluster_config("slurm")
    cluster_class = import_cluster_class(config.cluster_class, source=config.source)
    assert cluster_class is dask_jobqueue.SLURMCluster
    monkeypatch.chdir(tmp_path)  # log_directory is created relative to the working directory
    # No workers requested, so nothing is submitted; the scheduler stays on loopback.
    loopback = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    with cluster_class(**config.cluster_kwargs, scheduler_options=loopback) as cluster:
        script = cluster.job_script()
        assert not cluster.workers
    lines = script.splitlines()
    for expected in [
        "#SBATCH -J dagrun-worker",
        "#SBATCH -p regular",
        "#SBATCH -A myproject",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=30G",  # 32 GB expressed in GiB
        "#SBATCH -t 02:00:00",
        "#SBATCH --exclusive",
        "#SBATCH --constraint=cpu",
        "source /opt/dagrun/venv/bin/activate",
    ]:
        assert expected in lines
    worker_command = lines[-1]
    expected_arguments = [
        "--nworkers 2", "--nthreads 4", "--local-directory $TMPDIR", "--lifetime 110m"
    ]
    for expected in expected_arguments:
        assert expected in worker_command, worker_command
    assert dict(config.adapt or {}) == {"minimum": 0, "maximum": 20}


def test_kubernetes_config_builds_a_cluster_spec(in_repository: None) -> None:
    operator = require_module("dask_kubernetes.operator", "dask-kubernetes", "pip install -e '.[test]'")
    config = load_cluster_config("kubernetes")
    assert import_cluster_class(config.cluster_class, source=config.source) is operator.KubeCluster
    inspect.signature(operator.KubeCluster).bind(**config.cluster_kwargs)
    spec_arguments = inspect.signature(operator.make_cluster_spec).parameters
    spec = operator.make_cluster_spec(
        **{key: value for key, value in config.cluster_kwargs.items() if key in spec_arguments}
    )
    assert spec["metadata"]["name"] == "dagrun"
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 2
    (container,) = worker["spec"]["containers"]
    assert container["image"] == "registry.example.com/team/dagrun-worker:0.1.0"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in container["env"]
    assert dict(config.adapt or {}) == {"minimum": 1, "maximum": 10}


def test_importing_the_module_does_not_import_distributed() -> None:
    code = "import sys, dagrun.cluster_config; print('distributed' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPOSITORY
    )
    assert result.stdout.strip() == "False"


# --- finding a config by name ------------------------------------------------------------------


@pytest.fixture
def two_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    project, home = tmp_path / "project", tmp_path / "home"
    for directory, name, timeout in [(project, "both", 1), (home, "both", 2), (home, "mine", 3)]:
        text = f"connect_timeout: {timeout}\ncluster: {{class: a.B}}\n"
        write_config(directory / "cluster_configs", text, f"{name}.yaml")
    monkeypatch.chdir(project)
    monkeypatch.setenv("DAGRUN_HOME", str(home))
    return project, home


def test_a_name_resolves_in_the_project_before_dagrun_home(two_places: tuple[Path, Path]) -> None:
    assert resolve_cluster_config_path("both") == Path("cluster_configs/both.yaml")
    assert load_cluster_config("both").connect_timeout == 1.0


def test_a_name_falls_back_to_dagrun_home(two_places: tuple[Path, Path]) -> None:
    _, home = two_places
    assert resolve_cluster_config_path("mine") == home / "cluster_configs" / "mine.yaml"
    assert load_cluster_config("mine").connect_timeout == 3.0


def test_an_unknown_name_says_where_it_looked_and_what_exists(two_places) -> None:
    project, home = two_places
    with pytest.raises(ConfigError) as raised:
        resolve_cluster_config_path("nope")
    message = str(raised.value)
    assert "'nope'" in message
    assert str(project / "cluster_configs" / "nope.yaml") in message
    assert str(home / "cluster_configs" / "nope.yaml") in message
    assert "available: both, mine" in message


def test_a_path_is_used_as_is(two_places: tuple[Path, Path], tmp_path: Path) -> None:
    elsewhere = write_config(tmp_path / "elsewhere", "cluster: {class: a.B}\n", "both.yaml")
    assert resolve_cluster_config_path(str(elsewhere)) == elsewhere
    relative = Path("cluster_configs/both.yaml")
    assert resolve_cluster_config_path(str(relative)) == relative
    with pytest.raises(ConfigError, match="'missing.yaml' does not exist"):
        resolve_cluster_config_path("missing.yaml")
    with pytest.raises(ConfigError, match="name is empty"):
        resolve_cluster_config_path(" ")


# --- validation: every mistake names the file, line and key ------------------------------------


def test_an_empty_file_means_the_default_local_cluster(tmp_path: Path) -> None:
    for text in ["", "# only a comment\n", "{}\n", "cluster: {class: distributed.LocalCluster}\n"]:
        config = load_cluster_config(str(write_config(tmp_path, text)))
        assert config.address is None
        assert config.cluster_class in (None, "distributed.LocalCluster")
        assert not config.cluster_kwargs and config.adapt is None and config.connect_timeout == 60.0


INVALID = {
    "unknown top-level key": (
        "# remote\ninsecure: false\nadress: tcp://10.0.0.5:8786\n",
        3,
        f"unknown key 'adress' (allowed: {TOP_LEVEL_KEYS})",
    ),
    "unknown key in adapt": (
        "cluster: {class: a.B}\nadapt:\n  minimun: 1\n  maximum: 2\n",
        3,
        "unknown key 'minimun' in 'adapt' (allowed: minimum, maximum)",
    ),
    "unknown key in cluster": (
        "cluster:\n  class: a.B\n  kwarg: {}\n",
        3,
        "unknown key 'kwarg' in 'cluster' (allowed: class, kwargs)",
    ),
    "unknown key in security": (
        "address: tls://h:1\nsecurity:\n  cafile: ca.pem\n",
        3,
        "unknown key 'cafile' in 'security' (allowed: ca_file, cert, key)",
    ),
    "syntax error": ("cluster:\n  class: a.B\n  kwargs: {n_workers: 2\n", 4, "invalid YAML"),
    "tab indentation": ("cluster:\n\tclass: a.B\n", 2, "invalid YAML"),
    "two documents": ("cluster: {class: a.B}\n---\naddress: tls://h:1\n", 2, "invalid YAML"),
    "an unsafe tag": (
        "cluster:\n  class: a.B\n  kwargs: {run: !!python/object/apply:os.system [ls]}\n",
        3,
        "invalid YAML: could not determine a constructor",
    ),
    "top level is a list": ("- address\n", 1, "the top level must be a mapping"),
    "section is not a mapping": (
        "cluster: {class: a.B}\nadapt: 3\n",
        2,
        "'adapt' must be a mapping",
    ),
    "adapt.minimum is a string": (
        "cluster: {class: a.B}\nadapt:\n  minimum: '1'\n",
        3,
        "adapt.minimum must be an integer, got str '1'",
    ),
    "adapt.maximum is a bool": (
        "cluster: {class: a.B}\nadapt: {maximum: true}\n",
        2,
        "adapt.maximum must be an integer, got bool True",
    ),
    "address is a number": ("address: 8786\n", 1, "address must be a string, got int 8786"),
    "insecure is a number": (
        "address: tcp://10.0.0.5:1\ninsecure: 1\n",
        2,
        "insecure must be true or false",
    ),
    "worker_env value is a number": (
        "cluster: {class: a.B}\nworker_env:\n  HOME: /tmp\n  OMP_NUM_THREADS: 1\n",
        4,
        "worker_env.OMP_NUM_THREADS must be a string, got int 1 (quote it in YAML)",
    ),
    "cluster.kwargs is a list": (
        "cluster:\n  class: a.B\n  kwargs: [1]\n",
        3,
        "cluster.kwargs must be a mapping with string keys",
    ),
    "connect_timeout is text": (
        "address: tls://h:1\nconnect_timeout: soon\n",
        2,
        "connect_timeout must be a number",
    ),
    "connect_timeout is zero": (
        "address: tls://h:1\nconnect_timeout: 0\n",
        2,
        "connect_timeout must be a positive number",
    ),
    "duplicate key": (
        "address: tls://a:1\naddress: tls://b:1\n",
        2,
        "duplicate key 'address' (first on line 1)",
    ),
    "both address and cluster": (
        "address: tls://h:1\n\ncluster:\n  class: distributed.LocalCluster\n",
        3,
        "give either 'address' (attach to a running scheduler) or 'cluster' (start one), not both",
    ),
    "neither address nor cluster": (
        "adapt: {minimum: 1, maximum: 2}\n",
        1,
        "neither 'address' nor 'cluster' is set",
    ),
    "cluster without class": ("cluster:\n  kwargs: {}\n", 1, "'cluster' needs a 'class'"),
    "class is not a dotted path": (
        "cluster: {class: LocalCluster}\n",
        1,
        "cluster.class must be a dotted import path such as 'distributed.LocalCluster', "
        "got 'LocalCluster'",
    ),
    "adapt minimum above maximum": (
        "cluster: {class: a.B}\nadapt:\n  maximum: 2\n  minimum: 5\n",
        4,
        "adapt.minimum (5) is greater than adapt.maximum (2)",
    ),
    "adapt minimum negative": (
        "cluster: {class: a.B}\nadapt:\n  minimum: -1\n",
        3,
        "adapt.minimum must be >= 0",
    ),
    "adapt with an address": (
        "address: tls://h:1\nadapt: {maximum: 2}\n",
        2,
        "'adapt' needs a cluster that dagrun starts",
    ),
    "scheduler_options with an address": (
        "address: tls://h:1\nscheduler_options: {worker_ttl: 60s}\n",
        2,
        "'scheduler_options' needs a cluster that dagrun starts",
    ),
    "scheduler options twice": (
        "cluster:\n  class: a.B\n  kwargs: {scheduler_options: {}}\nscheduler_options: {port: 1}\n",
        4,
        "scheduler options are set twice",
    ),
    "security without cert": (
        "address: tls://h:1\nsecurity:\n  ca_file: ca.pem\n",
        2,
        "'security' needs ca_file and cert",
    ),
    "a field name instead of a key": (
        "cluster_class: null\naddress: tcp://10.0.0.5:8786\n",
        1,
        "unknown key 'cluster_class'",
    ),
    "plain tcp address to another host": (
        "# attach\naddress: tcp://10.0.0.5:8786\n",
        2,
        "refusing plain tcp:// to 'tcp://10.0.0.5:8786'",
    ),
}


@pytest.mark.parametrize("text, line, fragment", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_config_names_file_line_and_problem(tmp_path, text, line, fragment) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_cluster_config(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path} line {line}: "), message
    assert fragment in message
    assert "\n" not in message


def test_an_unknown_key_error_reads_as_documented(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "cluster_configs", "# one\n# two\n\nadress: tls://h:1\n", "remote.yaml")
    with pytest.raises(ConfigError) as raised:
        load_cluster_config("remote")
    assert str(raised.value) == (
        f"cluster_configs/remote.yaml line 4: unknown key 'adress' (allowed: {TOP_LEVEL_KEYS})"
    )


def test_a_null_value_counts_as_not_set(tmp_path: Path) -> None:
    text = "cluster:\n  class: distributed.LocalCluster\n  kwargs:\nadapt:\nworker_env: {A: b}\n"
    config = load_cluster_config(str(write_config(tmp_path, text)))
    assert config.adapt is None and not config.cluster_kwargs
    assert dict(config.worker_env) == {"A": "b"}


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    text = """
        cluster:
          class: distributed.LocalCluster
          kwargs: &local {n_workers: 1}
        scheduler_options:
          <<: *local
          port: 0
    """
    config = load_cluster_config(str(write_config(tmp_path, text)))
    assert dict(config.scheduler_options) == {"n_workers": 1, "port": 0}


def test_insecure_allows_plain_tcp_to_another_host(tmp_path: Path) -> None:
    path = write_config(tmp_path, "address: tcp://10.0.0.5:8786\ninsecure: true\n")
    config = load_cluster_config(str(path))
    assert config.address == "tcp://10.0.0.5:8786" and config.insecure


def test_a_config_built_in_code_is_validated_and_read_only() -> None:
    config = ClusterConfig(source="<inline>", cluster_class="a.B", cluster_kwargs={"n": 1})
    with pytest.raises(FrozenInstanceError):
        config.address = "tls://h:1"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.cluster_kwargs["n"] = 2  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"^<inline>: adapt.minimum \(3\) is greater"):
        ClusterConfig(source="<inline>", cluster_class="a.B", adapt={"minimum": 3, "maximum": 1})
    with pytest.raises(ConfigError, match=r"^<inline>: unknown key 'min' in 'adapt'"):
        ClusterConfig(source="<inline>", cluster_class="a.B", adapt={"min": 1})
    with pytest.raises(ConfigError, match=r"^<inline>: worker_env must be a mapping of strings"):
        ClusterConfig(source="<inline>", worker_env={"A": 1})
    with pytest.raises(ConfigError, match=r"^<inline>: refusing plain tcp://"):
        ClusterConfig(source="<inline>", address="tcp://10.0.0.5:8786")
    assert ClusterConfig(source="<inline>", connect_timeout=5).connect_timeout == 5.0


# --- plain-text addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, tls, insecure",
    [
        ("tcp://127.0.0.1:8786", False, False),
        ("tcp://127.4.5.6:8786", False, False),
        ("tcp://localhost:8786", False, False),
        ("tcp://[::1]:8786", False, False),
        ("tcp://[::ffff:127.0.0.1]:8786", False, False),
        ("127.0.0.1:8786", False, False),
        ("inproc://10.0.0.5/1234/1", False, False),
        ("tls://scheduler.example.com:8786", False, False),
        ("tls://10.0.0.5:8786", True, False),
        ("wss://scheduler.example.com:8786", True, False),
        ("tcp://10.0.0.5:8786", False, True),
    ],
)
def test_allowed_addresses(address: str, tls: bool, insecure: bool) -> None:
    check_address_allowed(address, tls=tls, insecure=insecure, source="test")


@pytest.mark.parametrize(
    "address, host_and_port",
    [
        ("tcp://10.0.0.5:8786", "10.0.0.5:8786"),
        ("10.0.0.5:8786", "10.0.0.5:8786"),
        ("tcp://scheduler.example.com:8786", "scheduler.example.com:8786"),
        ("tcp://[2001:db8::1]:8786", "[2001:db8::1]:8786"),
        ("tcp://0.0.0.0:8786", "0.0.0.0:8786"),
        ("ws://scheduler.example.com:8786", "scheduler.example.com:8786"),
        ("tcp://[not-an-address:8786", "[not-an-address:8786"),
    ],
)
def test_plain_text_to_another_host_is_refused_with_the_way_out(address, host_and_port) -> None:
    with pytest.raises(ConfigError) as raised:
        check_address_allowed(address, tls=False, insecure=False, source="--address")
    message = str(raised.value)
    assert message.startswith("--address: refusing plain ")
    assert "'security:' block (ca_file, cert, key)" in message
    assert f"use address: tls://{host_and_port}" in message
    assert "'insecure: true'" in message


def test_a_security_block_needs_a_tls_address() -> None:
    with pytest.raises(ConfigError, match="a 'security' block is set; use tls://127.0.0.1:8786"):
        check_address_allowed("tcp://127.0.0.1:8786", tls=True, insecure=True, source="x")


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown scheme 'http://'"):
        check_address_allowed("http://127.0.0.1:8787", tls=False, insecure=False, source="x")


# --- TLS files ---------------------------------------------------------------------------------


def test_security_kwargs_without_a_security_block_is_empty() -> None:
    assert security_kwargs(ClusterConfig(source="<inline>")) == {}


def write_certificates(directory: Path) -> None:
    """A CA and a client certificate signed by it, as PEM files."""
    require_module("cryptography", "cryptography (makes the test certificates)", "pip install -e '.[test]'")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(subject: str, key, issuer: str, signer, is_ca: bool) -> bytes:
        now = datetime.datetime.now(datetime.timezone.utc)
        built = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )
        return built.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    directory.mkdir(parents=True)
    (directory / "ca.pem").write_bytes(certificate("test-ca", ca_key, "test-ca", ca_key, True))
    (directory / "client.pem").write_bytes(
        certificate("dagrun-client", client_key, "test-ca", ca_key, False)
    )
    (directory / "client-key.pem").write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_security_kwargs_build_a_working_security_from_files_next_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed.security import Security

    write_certificates(tmp_path / "configs" / "certs")
    path = write_config(
        tmp_path / "configs",
        """
        address: tls://scheduler.example.com:8786
        security: {ca_file: certs/ca.pem, cert: certs/client.pem, key: certs/client-key.pem}
        """,
    )
    monkeypatch.chdir(tmp_path)  # relative paths follow the file, not the working directory
    kwargs = security_kwargs(load_cluster_config(str(path)))
    certs = tmp_path / "configs" / "certs"
    assert kwargs == {
        "require_encryption": True,
        "tls_ca_file": str(certs / "ca.pem"),
        "tls_client_cert": str(certs / "client.pem"),
        "tls_client_key": str(certs / "client-key.pem"),
    }
    security = Security(**kwargs)
    assert security.require_encryption
    assert security.get_connection_args("client")["ssl_context"] is not None


def test_security_kwargs_names_a_missing_file_and_its_key(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    path = write_config(
        tmp_path, "address: tls://h:8786\nsecurity: {ca_file: ca.pem, cert: client.pem}\n"
    )
    config = load_cluster_config(str(path))  # files are checked when they are about to be used
    with pytest.raises(ConfigError) as raised:
        security_kwargs(config)
    assert str(raised.value) == (
        f"{path}: security.cert: file '{tmp_path / 'client.pem'}' does not exist"
    )


def test_security_key_is_optional_when_the_cert_holds_it(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem"):
        (tmp_path / name).write_text("")
    text = "address: tls://h:1\nsecurity: {ca_file: ca.pem, cert: client.pem}\n"
    path = write_config(tmp_path, text)
    assert "tls_client_key" not in security_kwargs(load_cluster_config(str(path)))


# --- importing the cluster class ---------------------------------------------------------------


@pytest.mark.parametrize(
    "module, extra",
    [
        ("dask_jobqueue", "slurm"),
        ("dask_kubernetes", "kubernetes"),
        ("dask_kubernetes.operator", "kubernetes"),
        ("asyncssh", "ssh"),
        ("distributed", None),
        ("dask_nonexistent", None),
    ],
)
def test_extra_for_module(module: str, extra: str | None) -> None:
    assert extra_for_module(module) == extra


def test_a_cluster_class_is_imported_by_dotted_path() -> None:
    from distributed import LocalCluster

    assert import_cluster_class("distributed.LocalCluster", source="x") is LocalCluster
    with pytest.raises(ConfigError, match="module 'distributed' has no cluster class 'Nope'"):
        import_cluster_class("distributed.Nope", source="x")
    with pytest.raises(ConfigError, match="is not a dotted path"):
        import_cluster_class("LocalCluster", source="x")


def test_a_missing_unknown_package_gets_a_generic_message() -> None:
    with pytest.raises(ConfigError) as raised:
        import_cluster_class("dask_nonexistent.Cluster", source="my.yaml")
    message = str(raised.value)
    assert message == (
        "my.yaml: cannot import cluster class 'dask_nonexistent.Cluster': no module named "
        "'dask_nonexistent'; check the spelling, or install the package that provides it"
    )


@pytest.mark.parametrize(
    "path, hidden, extra",
    [
        ("dask_jobqueue.SLURMCluster", ["dask_jobqueue"], "slurm"),
        (
            "dask_kubernetes.operator.KubeCluster",
            ["dask_kubernetes", "dask_kubernetes.operator"],
            "kubernetes",
        ),
        ("distributed.SSHCluster", ["asyncssh"], "ssh"),
    ],
)
def test_a_missing_optional_package_names_its_extra(monkeypatch, path, hidden, extra) -> None:
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigError) as raised:
        import_cluster_class(path, source="cluster_configs/x.yaml")
    message = str(raised.value)
    assert message.startswith(f"cluster_configs/x.yaml: cluster class '{path}' needs ")
    assert f'pip install "dagrun[{extra}]"' in message
    assert f'pip install -e ".[{extra}]"' in message


# --- what a cluster class may be and take, through the real `dagrun run` ----------------------

FLOW_FILE = "from dagrun import flow\n\n@flow\ndef one():\n    return 1\n"


def run_with_config(tmp_path: Path, text: str) -> str:
    """`dagrun run flow.py --cluster ./cluster.yaml` (the console script); the one error line."""
    (tmp_path / "flow.py").write_text(FLOW_FILE)
    write_config(tmp_path, text)
    result = subprocess.run(
        [DAGRUN, "run", "flow.py", "--cluster", "./cluster.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_callable_that_is_not_a_dask_cluster_class_is_never_called(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    line = run_with_config(tmp_path, f"""
        cluster:
          class: os.system
          kwargs: {{command: "touch {marker}"}}
        """)
    assert line.startswith("Error: cluster.yaml: cluster.class 'os.system' is not a Dask cluster class")
    assert "it was not called" in line
    assert not marker.exists()


def test_a_class_given_in_code_must_be_a_dask_cluster_class_too() -> None:
    from dagrun.executors.dask import DaskExecutor

    calls = []

    class Recorder:
        def __init__(self, **kwargs: object) -> None:
            calls.append(kwargs)

    with pytest.raises(ConfigError, match="'.*Recorder' is not a Dask cluster class"):
        DaskExecutor(cluster=Recorder, cluster_kwargs={"n_workers": 1}).cluster_arguments()
    assert calls == []


def test_a_wrong_type_in_cluster_kwargs_names_file_key_and_expected_type(tmp_path: Path) -> None:
    line = run_with_config(tmp_path, """
        cluster:
          class: distributed.LocalCluster
          kwargs: {n_workers: two}
        """)
    assert line == (
        "Error: cluster.yaml: cluster.kwargs.n_workers must be an integer for LocalCluster, "
        "got str 'two'"
    )


def test_a_value_the_cluster_class_refuses_at_construction_names_the_key(tmp_path: Path) -> None:
    # memory_limit is documented as "str, float, int, or None": the class itself refuses "lots".
    line = run_with_config(tmp_path, """
        cluster:
          class: distributed.LocalCluster
          kwargs: {n_workers: 1, processes: false, memory_limit: lots}
        """)
    assert line.startswith("Error: cluster.yaml: cluster.kwargs.memory_limit: LocalCluster refused 'lots': ")
    assert "ValueError" in line


@pytest.mark.parametrize("kwargs, fragment", [
    ({"n_workers": True}, "cluster.kwargs.n_workers must be an integer for LocalCluster, got bool True"),
    ({"processes": "yes"}, "cluster.kwargs.processes must be true or false"),
    ({"dashboard_address": 8787},
     "cluster.kwargs.dashboard_address must be a string for LocalCluster, got int 8787 (quote it in YAML)"),
    ({"blocked_handlers": "feed"}, "cluster.kwargs.blocked_handlers must be a list"),
])
def test_cluster_kwargs_are_checked_against_the_documented_types(kwargs, fragment) -> None:
    from distributed import LocalCluster

    from dagrun.executors.cluster_checks import check_cluster_kwargs

    with pytest.raises(ConfigError, match="^x.yaml: ") as raised:
        check_cluster_kwargs(LocalCluster, kwargs, source="x.yaml")
    assert fragment in str(raised.value)


def test_cluster_kwargs_of_the_right_types_and_unknowable_ones_pass() -> None:
    from dask_jobqueue import SLURMCluster
    from dask_kubernetes.operator import KubeCluster
    from distributed import LocalCluster, SpecCluster

    from dagrun.executors.cluster_checks import check_cluster_kwargs

    check_cluster_kwargs(LocalCluster, {"n_workers": 2, "memory_limit": "4GiB", "silence_logs": "error",
                                        "host": None, "nthreads": 2}, source="x")
    check_cluster_kwargs(SLURMCluster, {"cores": 8, "memory": "16GB", "death_timeout": 60,
                                        "job_extra_directives": ["--exclusive"]}, source="x")
    check_cluster_kwargs(KubeCluster, {"worker_command": "dask-worker", "env": {"A": "1"}}, source="x")
    with pytest.raises(ConfigError, match="cluster.kwargs.n_workers: SpecCluster takes no argument 'n_workers'"):
        check_cluster_kwargs(SpecCluster, {"n_workers": 2}, source="x")
