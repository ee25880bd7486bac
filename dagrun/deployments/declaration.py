"""`Deployment`: a flow plus a name, default parameters, schedules, triggers and limits.

    nightly = make_deployment(etl, name="nightly", cron="0 2 * * *", timezone="Europe/Berlin",
                              parameters={"day": "2026-11-25"})
    hourly = make_deployment(etl, name="hourly", interval=3600)        # seconds or a timedelta
    report = make_deployment(report, name="report", triggers=[Trigger(after_deployment="nightly")])

| field             | meaning                                                               |
|-------------------|-----------------------------------------------------------------------|
| `name`            | unique among the deployments of a database                            |
| `flow`            | the `Flow` each run runs, in a process of its own (`dagrun run`)      |
| `parameters`      | defaults for every run; a manual run may override some                |
| `schedules`       | zero or more `Schedule`s (cron, interval, rrule); none = manual only  |
| `triggers`        | `Trigger`s: run after another deployment's or flow's run ends         |
| `max_active_runs` | runs of this deployment at once, over every `dagrun serve` (>= 1)     |
| `catchup`         | after downtime run every missed slot (at most `max_catchup`), or only the latest |
| `paused`          | the state when first registered; later `dagrun deployments pause/resume` own it |
| `flow_file`       | the file `dagrun run FILE:FLOW` loads the flow from                   |

Everything is checked when the deployment is built, before any service starts: each problem
is one `ConfigError` line naming the deployment and the field.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from dagrun.deployments.triggers import Trigger
from dagrun.errors import ConfigError, ParameterValidationError
from dagrun.parameters import bind_parameters
from dagrun.schedules import CronSchedule, IntervalSchedule, RRuleSchedule, Schedule, make_schedule

if TYPE_CHECKING:
    from dagrun.flows import Flow


@dataclass(frozen=True, slots=True)
class Deployment:
    """A flow that runs itself; build one with `make_deployment` (see the module docstring)."""

    name: str
    flow: Flow = field(compare=False)
    parameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    schedules: tuple[Schedule, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    max_active_runs: int = 1
    catchup: bool = False
    paused: bool = False
    flow_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or "/" in self.name:
            raise ConfigError(f"deployment {self.name!r}: name must be a non-empty string without '/'")
        owner = f"deployment {self.name!r}"
        if not all(hasattr(self.flow, attribute) for attribute in ("fn", "name", "parameter_validator")):
            raise ConfigError(f"{owner}: flow must be a @flow, got {self.flow!r}")
        for name, value, kind in (
            ("schedules", self.schedules, Schedule),
            ("triggers", self.triggers, Trigger),
        ):
            if not isinstance(value, tuple) or not all(isinstance(item, kind) for item in value):
                raise ConfigError(f"{owner}: {name} must be a tuple of {kind.__name__}, got {value!r}")
        if (
            not isinstance(self.max_active_runs, int)
            or isinstance(self.max_active_runs, bool)
            or self.max_active_runs < 1
        ):
            raise ConfigError(
                f"{owner}: max_active_runs must be an integer >= 1, got {self.max_active_runs!r}"
            )
        for name in ("catchup", "paused"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{owner}: {name} must be true or false, got {getattr(self, name)!r}")
        if self.flow_file is not None and not isinstance(self.flow_file, str):
            raise ConfigError(f"{owner}: flow_file must be a path, got {self.flow_file!r}")
        for trigger in self.triggers:
            if trigger.parameter is not None and not accepts_parameter(self.flow, trigger.parameter):
                raise ConfigError(
                    f"{owner}: triggers: flow {self.flow.name!r} has no parameter {trigger.parameter!r} "
                    "for the upstream run id (add it to the flow, or set the trigger's parameter=None)"
                )
        placeholders = {trigger.parameter: "0" * 32 for trigger in self.triggers if trigger.parameter}
        parameters = check_parameters(self.flow, self.parameters, owner=owner, extra=placeholders)
        object.__setattr__(self, "parameters", MappingProxyType(parameters))

    def describe_schedule(self) -> str:
        """One line: each schedule's description, or how the deployment runs without one."""
        if self.schedules:
            return "; ".join(schedule.describe() for schedule in self.schedules)
        return "triggers only" if self.triggers else "manual runs only"


def make_deployment(
    flow: Flow,
    *,
    name: str,
    cron: str | None = None,
    interval: timedelta | float | None = None,
    rrule: str | None = None,
    timezone: str = "UTC",
    anchor: datetime | None = None,
    parameters: Mapping[str, Any] | None = None,
    max_active_runs: int = 1,
    catchup: bool = False,
    triggers: Iterable[Trigger] = (),
    paused: bool = False,
) -> Deployment:
    """A `Deployment` of `flow`, checked now; what `Flow.deployment(**kwargs)` calls.

    Each of `cron`, `interval` (seconds or a timedelta, slots from `anchor`) and `rrule` adds
    one schedule, in `timezone`; give none for a deployment that runs only on request or on
    its triggers.
    """
    owner = name if isinstance(name, str) else repr(name)
    if anchor is not None and interval is None:
        raise ConfigError(f"deployment {owner!r}: anchor applies only to an interval schedule")
    schedules: list[Schedule] = []
    if cron is not None:
        schedules.append(make_schedule(cron=cron, timezone=timezone, owner=owner))
    if interval is not None:
        schedules.append(make_schedule(interval=interval, anchor=anchor, timezone=timezone, owner=owner))
    if rrule is not None:
        schedules.append(make_schedule(rrule=rrule, timezone=timezone, owner=owner))
    if not schedules:
        _check_timezone(timezone, owner)
    if parameters is not None and not isinstance(parameters, Mapping):
        raise ConfigError(f"deployment {owner!r}: parameters must be a mapping, got {parameters!r}")
    if isinstance(triggers, Trigger):
        triggers = (triggers,)
    return Deployment(
        name=name,
        flow=flow,
        parameters=dict(parameters or {}),
        schedules=tuple(schedules),
        triggers=tuple(triggers),
        max_active_runs=max_active_runs,
        catchup=catchup,
        paused=paused,
        flow_file=_source_file(flow),
    )


def check_parameters(
    flow: Flow, parameters: Mapping[str, Any], *, owner: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`parameters` as given, once they bind to the flow's signature and validate against its
    type hints and survive a JSON round trip (they travel through the database and the
    command line); `extra` values are checked with them but not returned."""
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"{owner}: parameters must be a mapping, got {parameters!r}")
    given = dict(parameters)
    for key in given:
        if not isinstance(key, str):
            raise ConfigError(f"{owner}: parameters: names must be strings, got {key!r}")
    try:
        encoded = json.dumps(given, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{owner}: parameters must be JSON values (strings, numbers, lists, mappings): {exc}"
        ) from None
    if json.loads(encoded) != given:
        raise ConfigError(
            f"{owner}: parameters must be JSON values; {given!r} changes in JSON (use lists, not tuples)"
        )
    try:
        bound = bind_parameters(flow.fn, str(flow.name), (), {**dict(extra or {}), **given})
        if flow.validate_parameters:
            flow.parameter_validator.validate(bound)
    except ParameterValidationError as exc:
        raise ConfigError(f"{owner}: parameters do not validate: {_one_line(exc)}") from None
    return given


def accepts_parameter(flow: Flow, name: str) -> bool:
    """Whether `flow` can be called with the keyword argument `name`."""
    parameters = inspect.signature(flow.fn).parameters
    if name in parameters:
        return parameters[name].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.VAR_POSITIONAL,
        )
    return any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())


def parameter_schema(flow: Flow) -> list[dict[str, Any]]:
    """The flow's parameters for a form: name, type (as written), default, required."""
    schema = []
    signature = flow.parameter_validator.signature
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            continue
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty:
            type_name = None
        elif isinstance(annotation, type):
            type_name = annotation.__name__
        else:
            type_name = str(annotation).replace("typing.", "")
        required = parameter.default is inspect.Parameter.empty
        default = None if required else _json_or_text(parameter.default)
        schema.append({"name": parameter.name, "type": type_name, "default": default, "required": required})
    return schema


def schedule_to_spec(schedule: Schedule) -> dict[str, Any]:
    """A JSON-able description from which `schedule_from_spec` rebuilds the same schedule."""
    if isinstance(schedule, CronSchedule):
        return {"cron": schedule.cron, "timezone": schedule.timezone}
    if isinstance(schedule, RRuleSchedule):
        return {"rrule": schedule.rrule, "timezone": schedule.timezone}
    if isinstance(schedule, IntervalSchedule):
        interval: timedelta = schedule.interval  # type: ignore[assignment]  # normalized
        anchor: datetime = schedule.anchor  # type: ignore[assignment]
        return {
            "interval": interval.total_seconds(),
            "anchor": anchor.isoformat(),
            "timezone": schedule.timezone,
        }
    raise ConfigError(f"cannot store schedule {schedule!r}: not a cron, interval or rrule schedule")


def schedule_from_spec(spec: Mapping[str, Any], owner: str | None = None) -> Schedule:
    """The schedule `schedule_to_spec` described."""
    values = dict(spec)
    if values.get("anchor") is not None:
        values["anchor"] = datetime.fromisoformat(values["anchor"])
    return make_schedule(**values, owner=owner)


def _check_timezone(timezone: Any, owner: str) -> None:
    """A deployment without schedules has no use for its timezone, but a wrong one is a typo."""
    try:
        ZoneInfo(timezone)
    except (ValueError, TypeError, KeyError, OSError):
        raise ConfigError(
            f"deployment {owner!r}: timezone {timezone!r} is unknown "
            "(expected an IANA name such as 'Europe/Berlin')"
        ) from None


def _source_file(flow: Any) -> str | None:
    try:
        source = inspect.getsourcefile(flow.fn)
    except TypeError:  # a builtin or a callable object: no file to load it from
        return None
    return str(Path(source).resolve()) if source else None


def _json_or_text(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
