"""`dagrun server`: the dashboard and JSON API over the run history.

Registered in `dagrun.cli.main`; also runnable alone as `python -m dagrun.cli.server_command`.
The token comes from the environment only (`DAGRUN_SERVER_TOKEN`), never from an option, so
it does not show in `ps` or the shell history.
"""

from __future__ import annotations

import os
import sys

import click

from dagrun.errors import DagrunError

TOKEN_VARIABLE = "DAGRUN_SERVER_TOKEN"


@click.command(name="server")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Any non-loopback address requires DAGRUN_SERVER_TOKEN.")
@click.option("--port", default=4200, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--database", metavar="URL", default=None,
              help="Run-history database (path, sqlite:/// or postgresql:// URL); default "
                   "DAGRUN_DATABASE_URL or $DAGRUN_HOME/dagrun.db.")
def server_command(host: str, port: int, database: str | None) -> None:
    """Serve the dashboard: runs, task runs, logs and flow statistics in the browser."""
    # Imported here so that every other dagrun command starts without loading tornado.
    from dagrun.server import serve

    token = os.environ.get(TOKEN_VARIABLE) or None
    try:
        serve(host, port, database, token)
    except DagrunError as exc:
        # Handled here as well as in the `dagrun` group, so the module run alone also
        # prints one line and exits with the error's code.
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    server_command(prog_name="dagrun server")
