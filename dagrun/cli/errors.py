"""How every `dagrun` command ends on an error: one `Error: ...` line, the error's exit code."""

from __future__ import annotations

import sys
from typing import Any

import click

from dagrun.errors import DagrunError


class DagrunGroup(click.Group):
    """Turns dagrun errors into one line on stderr and the error's exit code (2 for bad input,
    1 for a failed run), and Ctrl-C into exit 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DagrunError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Cancelled.", err=True)
            sys.exit(130)
