"""Deployments: flows that run themselves, on schedules, after other runs, or on request.

| module        | for                                                                     |
|---------------|-------------------------------------------------------------------------|
| `declaration` | `Deployment` and `make_deployment` (what `Flow.deployment` calls)       |
| `triggers`    | `Trigger`: run after another deployment's or flow's run ends            |
| `loading`     | `load_deployments(FILE.py or deployments.yaml)`                         |
| `store`       | `DeploymentStore`: deployments, requests, claims in the history database |
| `claims`      | the SQL that claims a run exactly once, and its other writes            |
| `queries`     | the SQL that reads deployments, claims and requests                     |
| `service`     | `Service`: what `dagrun serve` runs, `tick(now)` at a time              |
| `settlement`  | how a run's end is recorded: from the history, else Crashed/Cancelled   |
| `processes`   | each run as a process group of its own (`dagrun run FILE:FLOW`)         |

`make_deployment`, `Deployment` and `Trigger` import nothing heavy, so `dagrun.flows` can
import them; the rest loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagrun.deployments.declaration import Deployment, make_deployment
from dagrun.deployments.triggers import Trigger

if TYPE_CHECKING:
    from dagrun.deployments.loading import load_deployments
    from dagrun.deployments.service import Service
    from dagrun.deployments.store import DeploymentStore

__all__ = ["Deployment", "DeploymentStore", "Service", "Trigger", "load_deployments", "make_deployment"]

_LAZY = {
    "DeploymentStore": "dagrun.deployments.store",
    "Service": "dagrun.deployments.service",
    "load_deployments": "dagrun.deployments.loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dagrun.deployments' has no attribute {name!r}")
