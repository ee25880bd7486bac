"""The deployment routes, kept apart so the deployment store can be wired in here alone.

| route                                   | will do                                          |
|-----------------------------------------|--------------------------------------------------|
| `GET /api/deployments`                  | deployments: schedule, next runs, last state     |
| `POST /api/deployments/{name}/run`      | queue a manual run; body `{"parameters": {...}}`  |
| `POST /api/deployments/{name}/pause`    | stop scheduling new runs                         |
| `POST /api/deployments/{name}/resume`   | schedule again                                   |

Until a deployment store exists every route answers 501 with a JSON error, so the dashboard
and scripts can tell "not available in this version" from "no such deployment" (404).
"""

from __future__ import annotations

from typing import Any

from dagrun.server.api import ApiError, JSONHandler

_NOT_WIRED = "Deployments are not available in this dagrun server yet"


class DeploymentsHandler(JSONHandler):
    """`GET /api/deployments`."""

    def get(self) -> None:
        raise ApiError(501, _NOT_WIRED)


class DeploymentActionHandler(JSONHandler):
    """`POST /api/deployments/{name}/(run|pause|resume)`."""

    def post(self, name: str, action: str) -> None:
        raise ApiError(501, _NOT_WIRED)


def deployment_routes() -> list[tuple[str, Any]]:
    """The URL rules for the deployment API, in tornado's `(pattern, handler)` form."""
    return [
        (r"/api/deployments/?", DeploymentsHandler),
        (r"/api/deployments/([^/]+)/(run|pause|resume)", DeploymentActionHandler),
    ]
