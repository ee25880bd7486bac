"""`dagrun` commands. Each command prints one clear line on error and exits non-zero:
2 for bad input or configuration, 1 for a failed run, 130 for Ctrl-C or `dagrun runs
cancel`, 143 for SIGTERM."""

from __future__ import annotations

import click

from dagrun.cli.cache_commands import cache_group
from dagrun.cli.concurrency_commands import concurrency_group
from dagrun.cli.deploy_commands import deployments_group, serve_command
from dagrun.cli.errors import DagrunGroup
from dagrun.cli.runs_commands import flows_group, runs_group
from dagrun.cli.server_command import server_command
from dagrun.errors import DagrunError


@click.group(cls=DagrunGroup)
@click.version_option(package_name="dagrun")
def cli() -> None:
    """dagrun: plain Python functions as observable, resilient pipelines on Dask."""


@cli.command()
@click.argument("target", metavar="FILE[:FLOW]")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A flow parameter (repeatable).")
@click.option("--address", help="Attach to a running Dask scheduler, e.g. tcp://127.0.0.1:8786.")
@click.option("--cluster", help="A cluster config name (cluster_configs/NAME.yaml) or path.")
def run(target: str, params: tuple[str, ...], address: str | None, cluster: str | None) -> None:
    """Run a flow from a Python file."""
    from dagrun.cli.loading import flow_invocation, report_failed_run
    from dagrun.engine import run_flow

    flow, parameters, executor = flow_invocation(target, params, address, cluster)
    state = run_flow(flow, (), parameters, return_state=True, executor=executor)
    if not state.is_completed():
        error = state.exception
        if isinstance(error, DagrunError) and error.exit_code == 2:
            raise error  # bad input: one "Error: ..." line, exit 2
        report_failed_run(state)


for command in (
    server_command, runs_group, flows_group, cache_group, concurrency_group, deployments_group, serve_command,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="dagrun")


if __name__ == "__main__":
    main()
