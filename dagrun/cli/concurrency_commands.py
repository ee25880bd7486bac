"""`dagrun concurrency ...`: tag concurrency limits, stored in the run-history database.

| command                              | does                                            |
|--------------------------------------|-------------------------------------------------|
| `concurrency set TAG N`              | at most N task runs tagged TAG execute at once  |
| `concurrency ls [--json]`            | every limit                                     |
| `concurrency delete TAG`             | lift the limit (exit 2 if TAG has none)         |

Limits apply to flow runs on a Dask cluster that start after the change, across every flow
that shares the scheduler and this database; the in-process executor ignores them.
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from dagrun.concurrency import (
    check_limit,
    check_tag,
    delete_limit,
    list_limits,
    set_limit,
)
from dagrun.errors import ConfigError
from dagrun.history import HistoryStore


@click.group("concurrency")
def concurrency_group() -> None:
    """Cap how many task runs with a tag execute at once, across all flows."""


@concurrency_group.command("set")
@click.argument("tag")
@click.argument("limit", type=int, metavar="N")
def concurrency_set(tag: str, limit: int) -> None:
    """Let at most N task runs tagged TAG execute at once."""
    check_tag(tag)
    check_limit(limit)
    with HistoryStore.from_env() as store:
        entry = set_limit(store, tag, limit)
    runs = "task run" if entry.limit == 1 else "task runs"
    click.echo(
        f"Tag '{entry.tag}': at most {entry.limit} {runs} at once "
        "(applies to flow runs that start from now on)"
    )


@concurrency_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def concurrency_ls(as_json: bool) -> None:
    """Every concurrency limit, by tag."""
    with HistoryStore.from_env() as store:
        limits = list_limits(store)
    if as_json:
        rows = [{"tag": e.tag, "limit": e.limit, "updated": e.updated} for e in limits]
        click.echo(json.dumps(rows, indent=2))
        return
    if not limits:
        click.echo("No concurrency limits (add one with `dagrun concurrency set TAG N`)")
        return
    rows = [
        [e.tag, str(e.limit), datetime.fromtimestamp(e.updated).strftime("%Y-%m-%d %H:%M:%S")]
        for e in limits
    ]
    headers = ["TAG", "LIMIT", "UPDATED"]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


@concurrency_group.command("delete")
@click.argument("tag")
def concurrency_delete(tag: str) -> None:
    """Lift the concurrency limit of TAG."""
    with HistoryStore.from_env() as store:
        deleted = delete_limit(store, tag)
    if not deleted:
        raise ConfigError(f"No concurrency limit for tag '{tag}' (see `dagrun concurrency ls`)")
    click.echo(f"Tag '{tag}': no concurrency limit")
