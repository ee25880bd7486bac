"""Builds the dashboard application (`make_app`) and runs it until stopped (`serve`).

    app = make_app(HistoryStore("runs.db"))           # loopback use, no token
    app = make_app(store, token="s3cret")              # every request needs the token
    serve("0.0.0.0", 4200, None, token="s3cret")      # what `dagrun server` runs

Pages are one HTML shell (`/`) whose scripts route on the URL fragment (`#/runs/ID`), so
every page is served by the same two handlers and deep links survive a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from dagrun.errors import ConfigError
from dagrun.history import HistoryStore
from dagrun.server.api import (
    CancelHandler,
    FlowsHandler,
    NotFoundHandler,
    RunHandler,
    RunLogsHandler,
    RunsHandler,
    TaskRunHandler,
)
from dagrun.server.auth import GuardedHandler, is_loopback
from dagrun.server.deployments import deployment_routes

STATIC_DIR = Path(__file__).parent / "static"
STORE_THREADS = 4
"""Threads answering store queries; SQLite readers do not block each other under WAL."""


class PageHandler(GuardedHandler):
    """`GET /`: the single HTML page; the scripts it loads draw every view."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC_DIR / "index.html").read_bytes())


class StaticHandler(GuardedHandler, tornado.web.StaticFileHandler):
    """The page's scripts and styles, behind the same checks as everything else."""

    def set_extra_headers(self, path: str) -> None:
        # Revalidate every load (cheap: ETag / If-Modified-Since) so an upgrade shows at once.
        self.set_header("Cache-Control", "no-cache")


class PageNotFoundHandler(GuardedHandler):
    """Any other path: 404 (after the checks, so it reveals nothing to a stranger)."""

    def get(self, *args: str) -> None:
        self.deny(404, f"Not found: {self.request.path}")


def make_app(store: HistoryStore, *, token: str | None = None) -> tornado.web.Application:
    """The dashboard over `store`. With `token`, every request must present it (see `auth`)."""
    if token is not None and not token.strip():
        raise ConfigError("DAGRUN_SERVER_TOKEN is set but empty")
    routes: list[Any] = [
        (r"/", PageHandler),
        (r"/static/(.*)", StaticHandler, {"path": str(STATIC_DIR)}),
        (r"/api/runs/?", RunsHandler),
        (r"/api/runs/([^/]+)", RunHandler),
        (r"/api/runs/([^/]+)/logs", RunLogsHandler),
        (r"/api/runs/([^/]+)/cancel", CancelHandler),
        (r"/api/task-runs/([^/]+)", TaskRunHandler),
        (r"/api/flows/?", FlowsHandler),
        *deployment_routes(),
        (r"/api/(.*)", NotFoundHandler),
    ]
    return tornado.web.Application(
        routes,
        dagrun_store=store,
        dagrun_token=token,
        dagrun_executor=ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="dagrun-server"),
        default_handler_class=PageNotFoundHandler,
        compress_response=True,  # a 5,000-task run is ~2 MB of JSON, ~10x smaller gzipped
    )


def serve(host: str, port: int, database: str | None, token: str | None) -> None:
    """Serve the dashboard on `host:port` until SIGINT or SIGTERM.

    `database` is a path, `sqlite:///` or `postgresql://` URL (None:
    `HistoryStore.from_env()`). Off loopback a token is required: without one this raises
    `ConfigError` before binding anything. Port 0 picks a free port; the first line printed
    names the address either way.
    """
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"Refusing to serve the dashboard on {host!r} without a token: set "
            "DAGRUN_SERVER_TOKEN (every request must then send it), or bind to 127.0.0.1"
        )
    store = HistoryStore(database) if database else HistoryStore.from_env()
    try:
        app = make_app(store, token=token)
        asyncio.run(_run(app, host, port))
    finally:
        store.close()


async def _run(app: tornado.web.Application, host: str, port: int) -> None:
    try:
        sockets = bind_sockets(port, address=host or None)
    except OSError as exc:
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    server = HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    bound_port = sockets[0].getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"dagrun server: http://{shown_host}:{bound_port}/", flush=True)
    if app.settings["dagrun_token"] is not None:
        print("Requests need the token; in a browser open the address once with "
              "?token=<DAGRUN_SERVER_TOKEN>", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or on Windows; Ctrl-C then still stops the loop.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal_number, stop.set)
    try:
        await stop.wait()
    finally:
        server.stop()
        await server.close_all_connections()
        app.settings["dagrun_executor"].shutdown(wait=False)
        print("dagrun server stopped.", file=sys.stderr, flush=True)
