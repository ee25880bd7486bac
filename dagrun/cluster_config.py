"""Cluster configs: the YAML files in `cluster_configs/` that say which Dask cluster a flow uses.

A config either attaches to a scheduler that is already running (`address`) or names a cluster
class that dagrun starts for the run (`cluster.class` + `cluster.kwargs`). Everything is checked
here, before anything starts, so a typo fails with the file, line and key instead of deep
inside a cluster's constructor or after jobs were submitted. This module needs only the
standard library and PyYAML; the executor imports distributed and the cluster classes.

    address: tls://scheduler.example.com:8786      # attach ... or start one:
    cluster: {class: dask_jobqueue.SLURMCluster, kwargs: {cores: 8}}
    adapt: {minimum: 0, maximum: 20}               # only with `cluster`
    security: {ca_file: ca.pem, cert: client.pem, key: client-key.pem}  # relative to the file
    insecure: false                                # allow plain tcp:// to another host
    worker_env: {OMP_NUM_THREADS: "1"}             # strings only
    scheduler_options: {worker_ttl: 60s}           # only with `cluster`
    connect_timeout: 60                            # seconds to (re)connect to the scheduler

An empty file means dagrun's default local cluster. A key set to null counts as not set.
"""

from __future__ import annotations

import ipaddress
import os
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from dagrun.config import dagrun_home
from dagrun.errors import ConfigError

__all__ = [
    "ClusterConfig",
    "check_address_allowed",
    "load_cluster_config",
    "resolve_cluster_config_path",
    "security_kwargs",
]

CONFIG_DIRECTORY = "cluster_configs"

# What each kind of value must be, by the words an error message uses for it.
_KINDS: Mapping[str, Callable[[Any], bool]] = MappingProxyType(
    {
        "a string": lambda value: isinstance(value, str),
        "an integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
        "true or false": lambda value: isinstance(value, bool),
        "a number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
        "a mapping with string keys": lambda value: (
            isinstance(value, Mapping) and all(isinstance(key, str) for key in value)
        ),
        "a mapping of strings to strings": lambda value: (
            isinstance(value, Mapping)
            and all(isinstance(key, str) and isinstance(item, str) for key, item in value.items())
        ),
    }
)
_STRING, _INTEGER, _BOOLEAN, _NUMBER, _MAPPING, _STRING_MAPPING = _KINDS  # its keys, in order
# Each key's kind; a nested mapping is a section with its own allowed keys.
_SCHEMA: Mapping[str, Any] = MappingProxyType(
    {
        "address": _STRING,
        "cluster": MappingProxyType({"class": _STRING, "kwargs": _MAPPING}),
        "adapt": MappingProxyType({"minimum": _INTEGER, "maximum": _INTEGER}),
        "security": MappingProxyType({"ca_file": _STRING, "cert": _STRING, "key": _STRING}),
        "insecure": _BOOLEAN,
        "worker_env": _STRING_MAPPING,
        "scheduler_options": _MAPPING,
        "connect_timeout": _NUMBER,
    }
)
_PLAIN_SCHEMES = frozenset({"tcp", "ws", "ucx"})
_ENCRYPTED_SCHEMES = frozenset({"tls", "wss"})
_NULL_TAG = "tag:yaml.org,2002:null"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Where a flow's tasks run: a scheduler to attach to, or a cluster class to start.

    | fields set                  | meaning                                              |
    |-----------------------------|------------------------------------------------------|
    | neither                     | dagrun's default local cluster                       |
    | `address`                   | attach to a running scheduler; dagrun never stops it |
    | `cluster_class` (+ kwargs)  | start that cluster for the run, optionally `adapt`   |

    The constructor validates, so a config built in code fails as early as a file does.
    Mappings are stored read-only; pass `dict(config.cluster_kwargs)` on to a cluster class.
    """

    source: str
    address: str | None = None
    cluster_class: str | None = None
    cluster_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    adapt: Mapping[str, int] | None = None
    security: Mapping[str, str] | None = None
    insecure: bool = False
    worker_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    scheduler_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    connect_timeout: float = 60.0

    def __post_init__(self) -> None:
        checks = [
            ("address", self.address, _STRING),
            ("cluster.class", self.cluster_class, _STRING),
            ("cluster.kwargs", self.cluster_kwargs, _MAPPING),
            ("adapt", self.adapt, _MAPPING),
            ("security", self.security, _STRING_MAPPING),
            ("insecure", self.insecure, _BOOLEAN),
            ("worker_env", self.worker_env, _STRING_MAPPING),
            ("scheduler_options", self.scheduler_options, _MAPPING),
            ("connect_timeout", self.connect_timeout, _NUMBER),
        ]
        for section in ("adapt", "security"):
            value = getattr(self, section)
            for key in value if isinstance(value, Mapping) else ():
                allowed = _SCHEMA[section]
                if key not in allowed:
                    raise ConfigError(f"{self.source}: {_unknown_key(key, section, allowed)}")
                checks.append((f"{section}.{key}", value[key], allowed[key]))
        for name, value, kind in checks:
            optional = name in ("address", "cluster.class", "adapt", "security")
            if not (optional and value is None) and (problem := _kind_problem(kind, value)):
                raise ConfigError(f"{self.source}: {name} {problem}")
        for name in ("cluster_kwargs", "adapt", "security", "worker_env", "scheduler_options"):
            if (value := getattr(self, name)) is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        object.__setattr__(self, "connect_timeout", float(self.connect_timeout))
        if problem := _cross_field_problem({f.name: getattr(self, f.name) for f in fields(self)}):
            raise ConfigError(f"{self.source}: {problem[1]}")
        if self.address is not None:
            tls = self.security is not None
            check_address_allowed(self.address, tls=tls, insecure=self.insecure, source=self.source)


def _kind_problem(kind: str, value: Any) -> str | None:
    """Why `value` is not of `kind`, or None; a YAML `yes`/`true` is never an integer here."""
    if _KINDS[kind](value):
        return None
    return f"must be {kind}, got {type(value).__name__} {reprlib.repr(value)}"


def _unknown_key(key: object, section: str | None, allowed: Mapping[str, Any]) -> str:
    where = f" in '{section}'" if section else ""
    return f"unknown key {key!r}{where} (allowed: {', '.join(allowed)})"


def _cross_field_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first rule spanning several keys that `values` (ClusterConfig's fields, each of the
    right type) breaks, as (yaml key, message)."""
    address, adapt, security = values["address"], values["adapt"] or {}, values["security"]
    cluster_class, scheduler_options = values["cluster_class"], values["scheduler_options"]
    minimum, maximum = adapt.get("minimum"), adapt.get("maximum")
    rules = [
        (address is not None and cluster_class is not None, "cluster",
         "give either 'address' (attach to a running scheduler) or 'cluster' (start one), "
         "not both"),
        (cluster_class is not None and "." not in cluster_class.strip("."), "cluster.class",
         f"cluster.class must be a dotted import path such as 'distributed.LocalCluster', "
         f"got {cluster_class!r}"),
        (address is not None and values["adapt"] is not None, "adapt",
         "'adapt' needs a cluster that dagrun starts ('cluster'), not a scheduler at 'address'"),
        (address is not None and bool(scheduler_options), "scheduler_options",
         "'scheduler_options' needs a cluster that dagrun starts ('cluster'); the scheduler at "
         "'address' is already running"),
        (bool(scheduler_options) and "scheduler_options" in values["cluster_kwargs"],
         "scheduler_options", "scheduler options are set twice: top-level 'scheduler_options' "
         "and cluster.kwargs.scheduler_options; keep one"),
        (minimum is not None and minimum < 0, "adapt.minimum",
         f"adapt.minimum must be >= 0, got {minimum}"),
        (maximum is not None and maximum < 1, "adapt.maximum",
         f"adapt.maximum must be >= 1, got {maximum}"),
        (minimum is not None and maximum is not None and minimum > maximum, "adapt.minimum",
         f"adapt.minimum ({minimum}) is greater than adapt.maximum ({maximum})"),
        (security is not None and not {"ca_file", "cert"} <= set(security), "security",
         "'security' needs ca_file and cert (and key, unless the cert file also holds the key)"),
        (values["connect_timeout"] <= 0, "connect_timeout",
         f"connect_timeout must be a positive number of seconds, got {values['connect_timeout']}"),
    ]
    return next(((key, message) for broken, key, message in rules if broken), None)


def check_address_allowed(address: str, *, tls: bool, insecure: bool, source: str) -> None:
    """Refuse unencrypted traffic to another host, since Dask ships pickled code to run there.

    `tls` says a security block is configured (so the address must be tls://); `insecure`
    is the user's explicit opt-out. Loopback, `tls://`/`wss://` and `inproc://` are allowed.
    """
    scheme, separator, rest = address.strip().partition("://")
    if not separator:
        scheme, rest = "tcp", address.strip()  # distributed's default scheme
    scheme = scheme.lower()
    if scheme == "inproc" or scheme in _ENCRYPTED_SCHEMES:
        return
    if scheme not in _PLAIN_SCHEMES:
        raise ConfigError(
            f"{source}: address {address!r} has unknown scheme '{scheme}://' "
            "(a Dask scheduler address is tls://host:port, tcp://host:port or inproc://...)"
        )
    if tls:
        raise ConfigError(
            f"{source}: address {address!r} is plain {scheme}:// but a 'security' block is set; "
            f"use tls://{rest}"
        )
    if insecure or _is_loopback(rest):
        return
    raise ConfigError(
        f"{source}: refusing plain {scheme}:// to {address!r}: tasks, data and pickled code would "
        f"cross the network unencrypted and unauthenticated. Enable TLS: add a 'security:' block "
        f"(ca_file, cert, key) and use address: tls://{rest}; or, on a network you trust, set "
        "'insecure: true' in the cluster config"
    )


def _is_loopback(host_and_port: str) -> bool:
    host = ""
    try:
        host = urlsplit(f"//{host_and_port}").hostname or ""
        ip = ipaddress.ip_address(host)
    except ValueError:  # a malformed address, or a host name
        return host == "localhost"
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def security_kwargs(config: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments for `distributed.security.Security`, checked so a missing certificate
    is named here instead of surfacing as an SSL error from inside a connection attempt."""
    if config.security is None:
        return {}
    kwargs: dict[str, Any] = {"require_encryption": True}
    arguments = {"ca_file": "tls_ca_file", "cert": "tls_client_cert", "key": "tls_client_key"}
    for key, argument in arguments.items():
        if key in config.security:
            path = Path(config.security[key]).expanduser()
            if not path.is_file():
                raise ConfigError(f"{config.source}: security.{key}: file '{path}' does not exist")
            kwargs[argument] = str(path)
    return kwargs


def resolve_cluster_config_path(name_or_path: str) -> Path:
    """The file for a config name or path: a path is used as is; a bare name is looked up in
    ./cluster_configs/ first (the project's), then $DAGRUN_HOME/cluster_configs/ (the user's)."""
    name = name_or_path.strip()
    if not name:
        raise ConfigError("cluster config name is empty; give a name such as 'local' or a path")
    separators = {"/", os.sep, os.altsep} - {None}
    if any(separator in name for separator in separators) or Path(name).suffix or name[0] == "~":
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"cluster config file '{path}' does not exist")
        return path
    directories = [Path(CONFIG_DIRECTORY), dagrun_home() / CONFIG_DIRECTORY]
    for directory in directories:
        if (directory / f"{name}.yaml").is_file():
            return directory / f"{name}.yaml"
    looked = ", ".join(str((directory / f"{name}.yaml").absolute()) for directory in directories)
    available = sorted(
        {path.stem for directory in directories for path in directory.glob("*.yaml")}
    )
    raise ConfigError(
        f"no cluster config named {name!r}: looked for {looked}; "
        f"available: {', '.join(available) or 'none'}"
    )


def load_cluster_config(name_or_path: str) -> ClusterConfig:
    """Read and fully validate a cluster config, so errors surface before anything starts."""
    path = resolve_cluster_config_path(name_or_path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot read cluster config: {error}") from error
    try:  # building values from nodes can fail too, e.g. on an unknown `!!tag`
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        empty_mapping = isinstance(root, yaml.MappingNode) and not root.value
        if root is None or root.tag == _NULL_TAG or empty_mapping:
            return ClusterConfig(source=source)  # nothing set: dagrun's default local cluster
        return _Document(source).config(root, path.parent)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        message = error.problem or error.context
        if error.problem and error.context:  # e.g. where the unclosed bracket was opened
            context_line = f", line {error.context_mark.line + 1}" if error.context_mark else ""
            message += f" ({error.context}{context_line})"
        raise ConfigError(f"{source}{where}: invalid YAML: {message}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML: {error}") from None


class _Document:
    """One YAML file being read: its node tree, checked key by key against `_SCHEMA`, with
    each key's line kept so that later cross-key errors can still point at a line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = yaml.SafeLoader("")  # builds Python values from composed nodes
        self.lines: dict[str, int] = {}

    def error(self, line: int | None, message: str) -> ConfigError:
        where = f" line {line}" if line else ""
        return ConfigError(f"{self.source}{where}: {message}")

    def config(self, root: yaml.Node, directory: Path) -> ClusterConfig:
        values = self.section(root, _SCHEMA, None)
        if "address" not in values and "cluster" not in values:
            raise self.error(
                root.start_mark.line + 1,
                "neither 'address' nor 'cluster' is set: use 'address: tls://host:8786' to "
                "attach to a running scheduler or 'cluster: {class: distributed.LocalCluster}' "
                "to start one",
            )
        cluster = values.get("cluster", {})
        if "cluster" in values and "class" not in cluster:
            message = "'cluster' needs a 'class', e.g. distributed.LocalCluster"
            raise self.error(self.lines["cluster"], message)
        security = values.get("security")
        if security is not None:  # relative to the config file, not to wherever dagrun runs
            security = {key: os.path.join(directory.absolute(), os.path.expanduser(value))
                        for key, value in security.items()}
        config = dict(
            source=self.source,
            address=values.get("address"),
            cluster_class=cluster.get("class"),
            cluster_kwargs=cluster.get("kwargs", {}),
            adapt=values.get("adapt"),
            security=security,
            insecure=values.get("insecure", False),
            worker_env=values.get("worker_env", {}),
            scheduler_options=values.get("scheduler_options", {}),
            connect_timeout=values.get("connect_timeout", 60.0),
        )
        # Rules spanning keys run here first so that their errors can name a line.
        if problem := _cross_field_problem(config):
            key, message = problem
            raise self.error(self.lines.get(key) or self.lines.get(key.partition(".")[0]), message)
        if config["address"] is not None:
            where = f"{self.source} line {self.lines['address']}"
            tls, insecure = security is not None, config["insecure"]
            check_address_allowed(config["address"], tls=tls, insecure=insecure, source=where)
        return ClusterConfig(**config)

    def section(
        self, node: yaml.Node, schema: Mapping[str, Any], name: str | None
    ) -> dict[str, Any]:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode):
            where = repr(name) if name else "the top level"
            raise self.error(line, f"{where} must be a mapping of keys to values")
        values: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.constructor.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str) or key not in schema:
                raise self.error(key_line, _unknown_key(key, name, schema))
            dotted = f"{name}.{key}" if name else key
            if dotted in self.lines:
                first = self.lines[dotted]
                raise self.error(key_line, f"duplicate key {dotted!r} (first on line {first})")
            self.lines[dotted] = key_line
            if value_node.tag == _NULL_TAG:
                continue  # `key:` with nothing after it counts as not set
            kind = schema[key]
            if isinstance(kind, Mapping):
                values[key] = self.section(value_node, kind, dotted)
            else:
                values[key] = self.value(value_node, kind, dotted)
        return values

    def value(self, node: yaml.Node, kind: str, name: str) -> Any:
        if kind == _STRING_MAPPING and isinstance(node, yaml.MappingNode):
            for key_node, item_node in node.value:  # check entry by entry to name the line
                key = self.constructor.construct_object(key_node, deep=True)
                item = self.constructor.construct_object(item_node, deep=True)
                if problem := _kind_problem(_STRING, key) or _kind_problem(_STRING, item):
                    raise self.error(
                        item_node.start_mark.line + 1, f"{name}.{key} {problem} (quote it in YAML)"
                    )
        value = self.constructor.construct_object(node, deep=True)
        if problem := _kind_problem(kind, value):
            raise self.error(node.start_mark.line + 1, f"{name} {problem}")
        return value
