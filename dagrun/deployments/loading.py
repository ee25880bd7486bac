"""Finding deployments: the top-level `Deployment` objects of a Python file, or a YAML list.

    load_deployments("flows.py")             every Deployment bound at the top level
    load_deployments("deployments.yaml")     the `deployments:` list, flows as `file.py:flow`

A `deployments.yaml` mirrors `make_deployment`'s arguments; flow files are relative to it:

    deployments:
      - name: nightly
        flow: flows.py:etl            # FILE:FLOW (variable or flow name); FILE alone if it has one
        cron: "0 2 * * *"
        timezone: Europe/Berlin
        parameters: {day: "2026-11-25"}
        max_active_runs: 1
        catchup: false
      - name: report
        flow: flows.py:report
        triggers:
          - after_deployment: nightly  # or after_flow: NAME
            states: [Completed]
            parameter: upstream_run_id

Every error is one `ConfigError` line naming the file, and the deployment and key at fault.
Importing a Python file runs its top-level code, as `python FILE` would.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from dagrun.deployments.declaration import Deployment, make_deployment
from dagrun.deployments.triggers import Trigger
from dagrun.errors import ConfigError
from dagrun.flows import Flow
from dagrun.user_files import import_file

YAML_KEYS = (
    "name",
    "flow",
    "cron",
    "interval",
    "rrule",
    "timezone",
    "anchor",
    "parameters",
    "max_active_runs",
    "catchup",
    "triggers",
    "paused",
)
TRIGGER_KEYS = ("after_deployment", "after_flow", "states", "parameter")


def load_deployments(path: str | Path) -> list[Deployment]:
    """The deployments `path` declares (a `.py` file or a `.yaml`/`.yml` file), in order.

    Two deployments with one name are an error.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"No such deployments file: {path}")
    if file.suffix in (".yaml", ".yml"):
        deployments = _from_yaml(file)
    elif file.suffix == ".py":
        deployments = _from_python(file)
    else:
        raise ConfigError(f"{path}: expected a Python file (.py) or a deployments.yaml")
    check_unique_names(deployments, str(path))
    return deployments


def check_unique_names(deployments: list[Deployment], where: str) -> None:
    """A `ConfigError` naming the first name two deployments share."""
    seen: set[str] = set()
    for deployment in deployments:
        if deployment.name in seen:
            raise ConfigError(
                f"{where}: deployment {deployment.name!r}: name: "
                f"two deployments are named {deployment.name!r}"
            )
        seen.add(deployment.name)


def _from_python(file: Path) -> list[Deployment]:
    module = _import(file)
    found: list[Deployment] = []
    for value in vars(module).values():
        if isinstance(value, Deployment) and not any(value is known for known in found):
            found.append(value)
    local_flows = [value for value in vars(module).values() if isinstance(value, Flow)]
    resolved = str(file.resolve())
    # A flow bound at the top level of the served file loads from it, however it got there.
    return [
        _with_flow_file(deployment, resolved)
        if any(deployment.flow is flow for flow in local_flows)
        else deployment
        for deployment in found
    ]


def _from_yaml(file: Path) -> list[Deployment]:
    try:
        document = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: cannot read YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, Mapping) or "deployments" not in document:
        raise ConfigError(f"{file}: expected a mapping with a 'deployments' list at the top level")
    unknown = sorted(set(document) - {"deployments"})
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key {unknown[0]!r} (expected 'deployments')")
    entries = document["deployments"]
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: deployments: expected a list, got {type(entries).__name__}")
    modules: dict[Path, ModuleType] = {}
    deployments = []
    for index, entry in enumerate(entries):
        where = f"{file}: deployments[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: name: expected a non-empty string, got {name!r}")
        where = f"{file}: deployment {name!r}"
        unknown = sorted(set(entry) - set(YAML_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(YAML_KEYS)})")
        if "flow" not in entry:
            raise ConfigError(f"{where}: flow: missing (write flow: FILE.py:FLOW)")
        flow_file, flow = _yaml_flow(file, entry["flow"], where, modules)
        options = {key: entry[key] for key in YAML_KEYS if key in entry and key not in ("name", "flow")}
        if "anchor" in options:
            options["anchor"] = _anchor(options["anchor"], where)
        if "triggers" in options:
            options["triggers"] = _triggers(options["triggers"], where)
        try:
            deployment = make_deployment(flow, name=name, **options)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None
        deployments.append(_with_flow_file(deployment, flow_file))
    return deployments


def _yaml_flow(file: Path, reference: Any, where: str, modules: dict[Path, ModuleType]) -> tuple[str, Flow]:
    if not isinstance(reference, str) or not reference.strip():
        raise ConfigError(f"{where}: flow: expected FILE.py:FLOW, got {reference!r}")
    path_text, _, wanted = reference.rpartition(":") if not reference.endswith(".py") else (reference, "", "")
    flow_path = (file.parent / path_text).resolve()
    if not flow_path.is_file():
        raise ConfigError(f"{where}: flow: no such file {path_text!r} (relative to {file.parent})")
    if flow_path not in modules:
        modules[flow_path] = _import(flow_path)
    flows = {name: value for name, value in vars(modules[flow_path]).items() if isinstance(value, Flow)}
    if not wanted:
        if len(flows) != 1:
            raise ConfigError(
                f"{where}: flow: {path_text} defines {len(flows)} flows; write {path_text}:FLOW"
            )
        return str(flow_path), next(iter(flows.values()))
    for variable, flow in flows.items():
        if wanted in (variable, flow.name):
            return str(flow_path), flow
    available = ", ".join(sorted(flows)) or "none"
    raise ConfigError(f"{where}: flow: no flow {wanted!r} in {path_text} (flows: {available})")


def _anchor(value: Any, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"{where}: anchor: expected an ISO time such as 2026-01-01T06:00:00+00:00, got {value!r}"
            ) from None
    if not isinstance(value, datetime):
        raise ConfigError(f"{where}: anchor: expected an ISO time, got {value!r}")
    if value.tzinfo is None:
        raise ConfigError(f"{where}: anchor: {value.isoformat()} has no timezone; add one (+00:00 or Z)")
    return value


def _triggers(value: Any, where: str) -> list[Trigger]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: triggers: expected a list, got {value!r}")
    triggers = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: triggers[{index}]: expected a mapping, got {item!r}")
        unknown = sorted(set(item) - set(TRIGGER_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: triggers[{index}]: unknown key {unknown[0]!r} "
                f"(expected one of {', '.join(TRIGGER_KEYS)})"
            )
        try:
            triggers.append(Trigger(**dict(item)))
        except ConfigError as exc:
            raise ConfigError(f"{where}: triggers[{index}]: {str(exc).removeprefix('trigger: ')}") from None
    return triggers


def _import(file: Path) -> ModuleType:
    """Import `file` as `python FILE` would; what it raises becomes one ConfigError line."""
    try:
        module = import_file(file)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except SyntaxError as exc:
        raise ConfigError(f"{file}: line {exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: one line here, `python FILE` shows all
        frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == str(file)]
        where = f"line {frames[-1].lineno}: " if frames else ""
        raise ConfigError(f"{file}: {where}{type(exc).__name__}: {exc}") from None
    return module


def _with_flow_file(deployment: Deployment, flow_file: str) -> Deployment:
    return deployment if deployment.flow_file == flow_file else replace(deployment, flow_file=flow_file)
