"""`dagrun deployments ls|run|pause|resume` and `dagrun serve`: deployments from the terminal.

Registered in `dagrun.cli.main` as `deployments_group` and `serve_command`; also runnable alone
as `python -m dagrun.cli.deploy_commands (deployments ...|serve ...)`. The database is the run
history's (`DAGRUN_DATABASE_URL`, else `$DAGRUN_HOME/dagrun.db`).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from dagrun.cli.errors import DagrunGroup
from dagrun.cli.loading import param_value, split_param
from dagrun.errors import ConfigError, DagrunError

SERVE_LOG_FORMAT = "%(asctime)s | %(levelname)-7s | %(message)s"


def _store() -> Any:
    from dagrun.deployments.store import DeploymentStore

    return DeploymentStore.from_env()


def _local(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@click.group("deployments", cls=DagrunGroup)
def deployments_group() -> None:
    """Deployments registered by `dagrun serve`: list, run now, pause, resume."""


@deployments_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def deployments_ls(as_json: bool) -> None:
    """Each deployment's schedule, next three run times, last run state and pause flag."""
    with _store() as store:
        summaries = store.summaries(datetime.now(timezone.utc))
    if as_json:
        click.echo(json.dumps(summaries, indent=2, default=str))
        return
    if not summaries:
        click.echo("No deployments registered; `dagrun serve FILE` registers them.")
        return
    rows = [
        [
            s["name"],
            s["flow_name"],
            s["schedule"],
            ", ".join(_local(slot) for slot in s["next_runs"]) or "-",
            (s["last_run"] or {}).get("state") or "-",
            "yes" if s["paused"] else "no",
        ]
        for s in summaries
    ]
    headers = ["NAME", "FLOW", "SCHEDULE", "NEXT RUNS", "LAST RUN", "PAUSED"]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in [headers, *rows]:
        click.echo(
            "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


@deployments_group.command("run")
@click.argument("name")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a parameter (repeatable); values are JSON unless the parameter is a str.",
)
def deployments_run(name: str, params: tuple[str, ...]) -> None:
    """Queue a run of deployment NAME now; the `dagrun serve` serving it starts it."""
    with _store() as store:
        deployment = store.get(name)
        parameters = _parse_params(deployment, params)
        request_id = store.request_run(name, parameters, requested_by="cli")
        serving = store.live_services()
    shown = f" with {json.dumps(parameters)}" if parameters else ""
    click.echo(f"Queued manual run request {request_id} of deployment '{name}'{shown}")
    if not serving:
        click.echo(
            f"No `dagrun serve` is running on this database: the run starts when one serving '{name}' does.",
            err=True,
        )


def _parse_params(deployment: dict[str, Any], pairs: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` pairs as `dagrun run` reads them: JSON where it parses, raw for `str` parameters."""
    types = {parameter["name"]: parameter["type"] for parameter in deployment["parameter_schema"]}
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, raw = split_param(pair)
        parameters[key] = param_value(raw, as_text=types.get(key) == "str")
    return parameters


@deployments_group.command("pause")
@click.argument("name")
def deployments_pause(name: str) -> None:
    """Stop scheduled and triggered runs of NAME (due slots are skipped) until resumed."""
    with _store() as store:
        store.set_paused(name, True)
    click.echo(
        f"Paused deployment '{name}': no scheduled or triggered runs until `dagrun deployments resume {name}`"
    )


@deployments_group.command("resume")
@click.argument("name")
def deployments_resume(name: str) -> None:
    """Schedule NAME again, from the next slot on (slots missed while paused do not run)."""
    with _store() as store:
        store.set_paused(name, False)
    click.echo(f"Resumed deployment '{name}'")


@click.command("serve")
@click.argument("target", metavar="[FILE.py|deployments.yaml]", required=False)
@click.option(
    "--poll-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between checks for manual requests, triggers and ended runs.",
)
@click.option(
    "--grace-period",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGTERM, seconds running runs get to finish before they are cancelled.",
)
def serve_command(target: str | None, poll_interval: float, grace_period: float) -> None:
    """Serve the deployments in FILE.py (top-level ones) or deployments.yaml until SIGTERM."""
    try:
        _serve(target, poll_interval, grace_period)
    except DagrunError as exc:
        # Also here, so `python -m dagrun.cli.deploy_commands serve` prints one line too.
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)


def _serve(target: str | None, poll_interval: float, grace_period: float) -> None:
    from dagrun.deployments.loading import load_deployments
    from dagrun.deployments.service import Service

    if target is None:
        if not Path("deployments.yaml").is_file():
            raise ConfigError("Give FILE.py or deployments.yaml (no deployments.yaml in this directory)")
        target = "deployments.yaml"
    deployments = load_deployments(target)
    if not deployments:
        raise ConfigError(f"{target} declares no deployments")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(SERVE_LOG_FORMAT, "%H:%M:%S"))
    logger = logging.getLogger("dagrun.deployments")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(number: int, frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:  # a second signal: do not wait out the grace period
            service.hurry()
        stop.set()

    with _store() as store:
        service = Service(
            deployments,
            store,
            poll_interval=poll_interval,
            grace_period=grace_period,
            source=str(Path(target).resolve()),
        )
        previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            click.echo(
                f"dagrun serve: {len(deployments)} deployment(s) from {target} on {store.describe()}; "
                "SIGTERM or Ctrl-C stops",
                err=True,
            )
            service.serve_forever(stop)
        finally:
            for number, handler_before in previous.items():
                signal.signal(number, handler_before)


if __name__ == "__main__":

    @click.group(cls=DagrunGroup)
    def standalone() -> None:
        """`dagrun deployments` and `dagrun serve` without the rest of the CLI."""

    standalone.add_command(deployments_group)
    standalone.add_command(serve_command)
    standalone(prog_name="dagrun")
