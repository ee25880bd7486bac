"""Loading flows from a user's Python file, the way `python FILE` would see them.

The file is imported as a module registered for pickling by value, so its functions travel
to Dask workers that cannot import it; its directory goes on `sys.path`, as for a script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import cloudpickle

from dagrun.errors import ConfigError
from dagrun.flows import Flow
from dagrun.secrets import is_secret_type
from dagrun.tracebacks import views_of, was_captured
from dagrun.user_files import describe_syntax_error, import_file


def load_flows(path: str) -> dict[str, Flow]:
    """Import `path` and return its top-level flows by variable name."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"No such flow file: {path}")
    try:
        module = import_file(file)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except SyntaxError as exc:  # the README promises one line and exit 2 for bad input
        raise ConfigError(describe_syntax_error(exc, file)) from None
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
        name, raw = split_param(pair)
        if name not in signature.parameters and not any(
            p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
        ):
            known = ", ".join(signature.parameters) or "none"
            raise ConfigError(f"Flow '{flow.name}' has no parameter '{name}' (parameters: {known})")
        annotation = signature.parameters[name].annotation if name in signature.parameters else None
        value = param_value(raw, as_text=annotation in (str, "str"))
        if is_secret_type(annotation) and (value is None or isinstance(value, (bool, int, float))):
            value = raw  # a password of digits stays text (JSON strings and lists still parse)
        parameters[name] = value
    return parameters


def split_param(pair: str) -> tuple[str, str]:
    """`NAME=VALUE` as (name, raw value)."""
    name, separator, raw = pair.partition("=")
    if not separator or not name:
        raise ConfigError(f"--param expects NAME=VALUE, got {pair!r}")
    return name, raw


def param_value(raw: str, *, as_text: bool) -> Any:
    """A `--param` value: the text itself for a `str` parameter, else JSON where it parses
    (numbers, lists, objects) and the text otherwise."""
    if as_text:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def flow_invocation(
    target: str, params: tuple[str, ...], address: str | None, cluster: str | None
) -> tuple[Flow, dict[str, Any], Any]:
    """What `dagrun run FILE[:FLOW] --param ... [--address|--cluster]` asks for:
    (flow, parameters, executor override or None)."""
    path, _, name = target.partition(":") if not target.endswith(".py") else (target, "", "")
    if address and cluster:
        raise ConfigError("Give --address or --cluster, not both")
    flow = select_flow(load_flows(path), path, name or None)
    parameters = parse_params(flow, params)
    executor = None
    if address or cluster:
        from dagrun.executors.dask import DaskExecutor

        executor = (
            DaskExecutor(address=address, source="--address") if address else DaskExecutor.from_config(cluster)
        )
    return flow, parameters, executor


def report_failed_run(state: Any) -> None:
    """One line on stderr for a run that did not complete, then exit 1 (130 if cancelled).
    An error the flow body raised itself is shown with its traceback from the user's code
    first (a task's was shown when the task failed)."""
    error = state.exception
    if error is not None and not was_captured(error) and error.__traceback__ is not None:
        views = views_of(error)
        if views.has_user_frames:
            click.echo(views.user, err=True)
    notes = "; ".join(getattr(error, "__notes__", []))
    detail = f"{type(error).__name__}: {error}" + (f" ({notes})" if notes else "")
    click.echo(f"Flow run {state.name.lower()}: {detail}", err=True)
    sys.exit(130 if state.is_cancelled() else 1)
