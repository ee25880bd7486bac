"""Custom run names: `task_run_name=` / `flow_run_name=`, as in Prefect.

| option value                     | the run's name                                         |
|----------------------------------|--------------------------------------------------------|
| None                             | `<task>-<n>` / `<flow>-<id prefix>` (dagrun's default)  |
| `"sum-{x}"`                      | the format string over the call's parameters          |
| `callable()` -> str              | its answer                                            |
| `callable(parameters)` -> str    | its answer, given the call's parameters (tasks, as Prefect) |

Names are made in the driver when the run is created, and shown by `dagrun runs show` and the
dashboard. A task parameter that is an upstream future is shown by its run name (`add-0`):
its value may not exist yet, and the driver never waits for it just to name a run.
A name that cannot be made (a callable raising) falls back to the default, with a warning.
"""

from __future__ import annotations

import inspect
import string
import warnings
from collections.abc import Callable
from typing import Any

from dagrun.errors import ConfigError

RunName = str | Callable[..., str] | None


def check_run_name(option: str, owner: str, fn: Callable[..., Any], template: RunName) -> None:
    """Fail at decoration on a name that could never be made (a field that is no parameter)."""
    if template is None or callable(template):
        return
    if not isinstance(template, str):
        raise ConfigError(f"{option} of '{owner}' must be a format string or a callable, got {template!r}")
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ConfigError(f"{option} of '{owner}' is not a valid format string ({exc}): {template!r}") from None
    parameters = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for field in fields:
        root = field.split(".")[0].split("[")[0]
        if not root or root.isdigit():
            raise ConfigError(f"{option} of '{owner}' must name parameters ({{x}}), not positions: {template!r}")
        if root not in parameters and not takes_any:
            raise ConfigError(
                f"{option} of '{owner}' uses '{{{root}}}', which is not a parameter of "
                f"{getattr(fn, '__name__', fn)!r} ({', '.join(parameters) or 'none'})"
            )


def flow_run_name(flow: Any, parameters: dict[str, Any], default: str) -> str:
    """The name of a run of `flow` with these (validated) parameters."""
    return _render(flow.flow_run_name, parameters, default, f"flow '{flow.name}'", pass_parameters=False)


def task_run_name(task: Any, args: tuple | None, kwargs: dict | None, default: str) -> str:
    """The name of the task run of `task` called with `args` / `kwargs`."""
    template = getattr(task, "task_run_name", None)
    if template is None or args is None:
        return default
    try:
        bound = inspect.signature(task.fn).bind(*args, **(kwargs or {}))
    except TypeError:
        return default  # the call itself fails on the worker, with Python's own message
    bound.apply_defaults()
    parameters = {name: _shown(value) for name, value in bound.arguments.items()}
    return _render(template, parameters, default, f"task '{task.name}'", pass_parameters=True)


def _render(template: RunName, parameters: dict[str, Any], default: str, owner: str, *, pass_parameters: bool) -> str:
    if template is None:
        return default
    try:
        if isinstance(template, str):
            name = template.format(**parameters)
        elif pass_parameters and "parameters" in inspect.signature(template).parameters:
            name = template(parameters=parameters)
        else:
            name = template()
        if not isinstance(name, str):
            raise TypeError(f"it returned {type(name).__name__}, not a str")
        return name
    except Exception as exc:  # noqa: BLE001 - a bad name must not fail the run
        warnings.warn(f"the run name of {owner} could not be made ({type(exc).__name__}: {exc}); using {default!r}",
                      stacklevel=2)
        return default


def _shown(value: Any) -> Any:
    run = getattr(value, "_run", None)  # a TaskFuture: named by its run, never waited for
    return run.name if run is not None and type(value).__name__ == "TaskFuture" else value
