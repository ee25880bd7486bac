"""The deployment routes, over `DeploymentStore` in the dashboard's run-history database.

| route                                   | does                                                |
|-----------------------------------------|-----------------------------------------------------|
| `GET /api/deployments`                  | as `dagrun deployments ls --json`, plus `requests`  |
| `POST /api/deployments/{name}/run`      | queue a manual run; body `{"parameters": {...}}`    |
| `POST /api/deployments/{name}/pause`    | stop scheduled and triggered runs                   |
| `POST /api/deployments/{name}/resume`   | schedule again                                      |

Unknown deployments are 404, a body that is not `{"parameters": {...}}` is 400. Queuing a run
only inserts a request row: the `dagrun serve` serving the deployment checks the parameters
against the flow and starts it (or refuses it, with the reason in `requests[].error`). The
server never imports user code. The deployment store opens the history's database for
writing, so these writes happen even when an SQLite history was opened with `?mode=ro`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from dagrun.deployments.store import DeploymentStore
from dagrun.server.api import ApiError, JSONHandler

RECENT = 5
"""How many recent runs and manual requests each deployment lists."""

_STORE_SETTING = "dagrun_deployment_store"
_store_lock = threading.Lock()


class DeploymentHandler(JSONHandler):
    """Shared: the deployment store, opened once per application on the history's database."""

    @property
    def deployments(self) -> DeploymentStore:
        with _store_lock:
            store: DeploymentStore | None = self.settings.get(_STORE_SETTING)
            if store is None:
                store = DeploymentStore(self.store.database.writable().url)
                self.settings[_STORE_SETTING] = store
        return store

    async def known(self, name: str) -> None:
        try:
            await self.call(self.deployments.get, name)
        except ApiError as exc:
            raise ApiError(404, exc.message) from None


class DeploymentsHandler(DeploymentHandler):
    """`GET /api/deployments`: each deployment's summary with its `requests`, newest first."""

    async def get(self) -> None:
        summaries = await self.call(self.deployments.summaries, recent=RECENT)
        for summary in summaries:
            summary["requests"] = await self.call(self.deployments.requests, summary["name"], RECENT)
        self.write_json(summaries)


class DeploymentActionHandler(DeploymentHandler):
    """`POST /api/deployments/{name}/(run|pause|resume)`."""

    async def post(self, name: str, action: str) -> None:
        await self.known(name)
        if action == "run":
            parameters = self._parameters()
            request_id = await self.call(
                self.deployments.request_run, name, parameters, requested_by="dashboard"
            )
            self.write_json({"deployment": name, "request_id": request_id, "parameters": parameters}, 202)
            return
        await self.call(self.deployments.set_paused, name, action == "pause")
        self.write_json({"deployment": name, "paused": action == "pause"})

    def _parameters(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise ApiError(400, 'The body must be JSON: {"parameters": {...}}') from None
        parameters = body.get("parameters", {}) if isinstance(body, dict) else None
        if not isinstance(parameters, dict):
            raise ApiError(400, 'The body must be {"parameters": {NAME: VALUE, ...}}')
        return parameters


def deployment_routes() -> list[tuple[str, Any]]:
    """The URL rules for the deployment API, in tornado's `(pattern, handler)` form."""
    return [
        (r"/api/deployments/?", DeploymentsHandler),
        (r"/api/deployments/([^/]+)/(run|pause|resume)", DeploymentActionHandler),
    ]
