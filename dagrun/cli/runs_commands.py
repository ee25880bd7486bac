"""`dagrun runs ...` and `dagrun flows ls`: the run history from the terminal.

Listing commands take `--json` for scripts; field names are those of DESIGN section 6.
Run ids may be given as a unique prefix (as shown in the tables).
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import click

from dagrun.errors import ConfigError
from dagrun.history import HistoryStore
from dagrun.states import StateType


def _store() -> HistoryStore:
    return HistoryStore.from_env()


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"


def _duration(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    seconds = (end or time.time()) - start
    return f"{seconds:.2f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    for line in [headers, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


def _resolve(store: HistoryStore, run_id: str) -> str:
    resolved = store.resolve_id(run_id)
    if resolved is None:
        raise ConfigError(f"No flow run with id '{run_id}' (see `dagrun runs ls`)")
    return resolved


@click.group("runs")
def runs_group() -> None:
    """Inspect flow runs recorded in the run history."""


@runs_group.command("ls")
@click.option("--flow", "flow_name", help="Only runs of this flow.")
@click.option("--state", help="Only runs in this state (Completed, Failed, Running, ...).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def runs_ls(flow_name: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Flow runs, newest first."""
    with _store() as store:
        runs = store.list_flow_runs(flow_name=flow_name, state=state, limit=limit)
    if as_json:
        click.echo(json.dumps(runs, indent=2, default=str))
        return
    rows = [
        [r["id"][:12], r["flow_name"], r["state"], _when(r["start_time"]), _duration(r["start_time"], r["end_time"]),
         json.dumps(r["parameters"], default=str)[:60]]
        for r in runs
    ]
    _table(["ID", "FLOW", "STATE", "STARTED", "DURATION", "PARAMETERS"], rows)


@runs_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--full-traceback", "full", is_flag=True, help="Show tracebacks with dagrun's and Dask's frames.")
def runs_show(run_id: str, as_json: bool, full: bool) -> None:
    """One flow run, a table of its task runs, and the tracebacks of its failures."""
    with _store() as store:
        run = store.get_flow_run(_resolve(store, run_id))
    assert run is not None
    if as_json:
        click.echo(json.dumps(run, indent=2, default=str))
        return
    click.echo(f"Flow run {run['id']}  ({run['flow_run_name']}, flow '{run['flow_name']}')")
    click.echo(f"State: {run['state']}   started {_when(run['start_time'])}   duration {_duration(run['start_time'], run['end_time'])}")
    click.echo(f"Parameters: {json.dumps(run['parameters'], default=str)}")
    if run.get("error"):
        click.echo(f"Error: {run['error']}")
    click.echo("")
    rows = [
        [t["task_run_name"], t["state"], str(t["attempts"] or "-"), _duration(t["start_time"], t["end_time"]),
         "yes" if t.get("cache_hit") else "no", (t.get("error") or "")[:70]]
        for t in run["task_runs"]
    ]
    _table(["TASK RUN", "STATE", "ATTEMPTS", "DURATION", "CACHED", "ERROR"], rows)
    _tracebacks(run, "full_traceback" if full else "traceback")


def _tracebacks(run: dict, field: str) -> None:
    """Each failed task run's traceback, then the flow run's unless it is one of those (a task's
    exception that the flow body re-raised)."""
    shown = set()
    for task_run in run["task_runs"]:
        trace = task_run.get(field) or task_run.get("traceback")
        if trace and task_run["state"] in (StateType.FAILED.value, StateType.CRASHED.value):
            click.echo(f"\nTask run '{task_run['task_run_name']}' failed:\n{trace}")
            shown.add(trace)
    trace = run.get(field) or run.get("traceback")
    if trace and trace not in shown:
        click.echo(f"\nFlow run '{run['flow_run_name']}' failed:\n{trace}")


@runs_group.command("logs")
@click.argument("run_id")
@click.option("--task", "task_name", help="Only lines of this task (name or run name).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
def runs_logs(run_id: str, task_name: str | None, follow: bool) -> None:
    """The run's log lines, in order."""
    with _store() as store:
        flow_run_id = _resolve(store, run_id)
        after = 0
        while True:
            for line in store.get_logs(flow_run_id, task_name=task_name, after_id=after):
                after = line["id"]
                names = " | ".join(n for n in (line.get("task_run_name"),) if n)
                prefix = f"{_when(line['timestamp'])} | {line['level_name']:<7} | "
                click.echo(prefix + (f"{names} - " if names else "") + line["message"])
            if not follow:
                return
            run = store.get_flow_run(flow_run_id)
            if run is None or run["end_time"] is not None:
                return
            time.sleep(0.5)


@runs_group.command("cancel")
@click.argument("run_id")
def runs_cancel(run_id: str) -> None:
    """Ask a running flow run's driver to cancel it (within seconds)."""
    with _store() as store:
        flow_run_id = _resolve(store, run_id)
        if not store.request_cancel(flow_run_id):
            raise ConfigError(f"Flow run {flow_run_id} is not running; nothing to cancel")
    click.echo(f"Cancel requested for flow run {flow_run_id}")


@click.group("flows")
def flows_group() -> None:
    """Flows seen in the run history."""


@flows_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def flows_ls(as_json: bool) -> None:
    """Each flow's run count, success rate, last and median duration."""
    with _store() as store:
        stats = store.flow_stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2, default=str))
        return
    rows = [
        [s["flow_name"], str(s["run_count"]),
         "-" if s["success_rate"] is None else f"{100 * s['success_rate']:.0f}%",
         "-" if s["last_duration"] is None else f"{s['last_duration']:.2f} s",
         "-" if s["median_duration"] is None else f"{s['median_duration']:.2f} s", s.get("last_state") or "-"]
        for s in stats
    ]
    _table(["FLOW", "RUNS", "SUCCESS", "LAST", "MEDIAN", "LAST STATE"], rows)

