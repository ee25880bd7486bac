"""Event triggers: run a deployment when a run of another deployment (or flow) ends.

    Trigger(after_deployment="nightly")                      after each Completed run of it
    Trigger(after_flow="etl", states=("Failed", "Crashed"))  after a failed top-level etl run
    Trigger(after_deployment="extract", parameter=None)      do not pass the upstream run id

Policy, decided once here:

- The upstream run is a *top-level* flow run in the history: a run of deployment A is one
  whose record carries `deployment = A`; a run of flow A is one named A that is no subflow.
- Only runs that end at or after the trigger was first registered count (`since`, in the
  history's clock), so adding a trigger does not replay the whole history.
- The upstream run's id is passed to the triggered run as the parameter `parameter`
  (default `upstream_run_id`). The flow must accept that parameter (or `**kwargs`): this is
  checked when the deployment is declared. `parameter=None` passes nothing.
- Each (trigger, upstream run) starts exactly one run: it is a unique key of the service's
  claims. When the deployment is at `max_active_runs` the event waits, it is not dropped.
- A paused deployment's triggers wait too; manual runs still start while paused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dagrun.errors import ConfigError
from dagrun.history.events import FINAL_STATE_NAMES, state_name

DEFAULT_TRIGGER_PARAMETER = "upstream_run_id"


@dataclass(frozen=True, slots=True)
class Trigger:
    """Run the owning deployment when a run of `after_deployment` or `after_flow` ends in one
    of `states`, passing that run's id as the parameter `parameter` (None: not passed)."""

    after_deployment: str | None = None
    after_flow: str | None = None
    states: tuple[str, ...] = ("Completed",)
    parameter: str | None = DEFAULT_TRIGGER_PARAMETER

    def __post_init__(self) -> None:
        given = [value for value in (self.after_deployment, self.after_flow) if value is not None]
        if len(given) != 1:
            raise ConfigError(
                "trigger: give exactly one of after_deployment, after_flow "
                f"(got {self.after_deployment!r} and {self.after_flow!r})"
            )
        if not isinstance(given[0], str) or not given[0].strip():
            raise ConfigError(f"trigger: the upstream name must be a non-empty string, got {given[0]!r}")
        states = (self.states,) if isinstance(self.states, str) else self.states
        try:
            names = tuple(states)
        except TypeError:
            raise ConfigError(f"trigger: states must be a list of states, got {self.states!r}") from None
        canonical = []
        for state in names:
            name = state_name(state) if isinstance(state, str) else None
            if name is None or name not in FINAL_STATE_NAMES:
                final = ", ".join(sorted(FINAL_STATE_NAMES))
                raise ConfigError(f"trigger: state {state!r} is not a final state ({final})")
            if name not in canonical:
                canonical.append(name)
        if not canonical:
            raise ConfigError("trigger: states must name at least one final state")
        if self.parameter is not None and (
            not isinstance(self.parameter, str) or not self.parameter.isidentifier()
        ):
            raise ConfigError(f"trigger: parameter must be a parameter name or None, got {self.parameter!r}")
        object.__setattr__(self, "states", tuple(canonical))

    @property
    def key(self) -> str:
        """A stable name for this trigger within its deployment (the claims' unique key)."""
        kind, name = self.upstream()
        return json.dumps([kind, name, sorted(self.states), self.parameter], separators=(",", ":"))

    def describe(self) -> str:
        kind, name = self.upstream()
        states = " or ".join(self.states)
        passed = f", passing its id as {self.parameter!r}" if self.parameter else ""
        return f"after a {states} run of {kind.replace('_', ' ')} {name!r}{passed}"

    def upstream(self) -> tuple[str, str]:
        """("deployment" or "flow", its name)."""
        if self.after_deployment is not None:
            return "deployment", self.after_deployment
        return "flow", self.after_flow  # type: ignore[return-value]  # one of them is set


def ended_upstream_runs(
    connection: Any, deployment: str, trigger: Trigger, limit: int
) -> list[dict[str, Any]]:
    """Runs that fire `trigger` of `deployment` and have not started a run yet, oldest first.

    Each is `{id, flow_name, deployment, state, end_time}`. Reads `flow_runs` (the history),
    `deployment_triggers` (for `since`) and `deployment_runs` (what was already started).
    """
    kind, name = trigger.upstream()
    if kind == "deployment":
        upstream = "f.deployment = ?"
    else:
        upstream = "f.flow_name = ? AND f.parent_flow_run_id IS NULL"
    states = ", ".join("?" * len(trigger.states))
    rows: list[dict[str, Any]] = connection.execute(
        "SELECT f.id, f.flow_name, f.deployment, f.state, f.end_time FROM flow_runs f "
        "JOIN deployment_triggers t ON t.deployment = ? AND t.trigger_key = ? "
        f"WHERE {upstream} AND f.state IN ({states}) AND f.end_time >= t.since "
        "AND NOT EXISTS (SELECT 1 FROM deployment_runs r WHERE r.deployment = ? "
        "AND r.trigger_key = ? AND r.upstream_run_id = f.id) "
        "ORDER BY f.end_time, f.id LIMIT ?",
        (deployment, trigger.key, name, *trigger.states, deployment, trigger.key, limit),
    ).fetchall()
    return rows
