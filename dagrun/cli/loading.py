"""Loading flows from a user's Python file, the way `python FILE` would see them.

The file is imported as a module registered for pickling by value, so its functions travel
to Dask workers that cannot import it; its directory goes on `sys.path`, as for a script.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import cloudpickle

from dagrun.errors import ConfigError
from dagrun.flows import Flow


def load_flows(path: str) -> dict[str, Flow]:
    """Import `path` and return its top-level flows by variable name."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"No such flow file: {path}")
    module_name = "dagrun_user_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(file.resolve().parent))
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return {name: value for name, value in vars(module).items() if isinstance(value, Flow)}


def select_flow(flows: dict[str, Flow], path: str, wanted: str | None) -> Flow:
    """The flow named `wanted` (variable or flow name); the only flow when none is named."""
    available = ", ".join(
        name if flow.name == name else f"{name} ({flow.name})" for name, flow in sorted(flows.items())
    ) or "none"
    if wanted is None:
        if len(flows) == 1:
            return next(iter(flows.values()))
        raise ConfigError(f"{path} defines {len(flows)} flows ({available}): name one as {path}:FLOW")
    for name, candidate in flows.items():
        if wanted in (name, candidate.name):
            return candidate
    raise ConfigError(f"No flow '{wanted}' in {path}; flows in the file: {available}")


def parse_params(flow: Flow, pairs: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` pairs; values are JSON where they parse (numbers, lists) unless the hint is str."""
    parameters: dict[str, Any] = {}
    signature = flow.parameter_validator.signature
    for pair in pairs:
        name, separator, raw = pair.partition("=")
        if not separator or not name:
            raise ConfigError(f"--param expects NAME=VALUE, got {pair!r}")
        if name not in signature.parameters and not any(
            p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
        ):
            known = ", ".join(signature.parameters) or "none"
            raise ConfigError(f"Flow '{flow.name}' has no parameter '{name}' (parameters: {known})")
        annotation = signature.parameters[name].annotation if name in signature.parameters else None
        if annotation in (str, "str"):
            parameters[name] = raw
            continue
        try:
            parameters[name] = json.loads(raw)
        except ValueError:
            parameters[name] = raw
    return parameters
