"""The dashboard: a tornado app serving a small single-page UI and a JSON API over the run history.

| module        | for                                                                       |
|---------------|---------------------------------------------------------------------------|
| `app`         | `make_app(store, token=)` builds the application; `serve()` runs it         |
| `auth`        | the bearer-token / cookie check every request passes, and the Host check  |
| `api`         | the JSON handlers over `HistoryStore` (runs, task runs, logs, flows)       |
| `deployments` | the deployment routes: list, run, pause and resume, over the deployment store |
| `static/`     | the pages: vanilla JS modules, CSS and inline SVG; no build step, no CDN  |

The server only reads the history, except for cancel requests (`request_cancel`), which the
run's own driver carries out. It imports `dagrun.history` and nothing from the engine.
"""

from dagrun.server.app import make_app, serve

__all__ = ["make_app", "serve"]
