"""`dagrun cache ...`: the result store from the terminal, and why a flow's tasks hit or miss.

| command                                        | does                                           |
|------------------------------------------------|------------------------------------------------|
| `cache ls [--task NAME] [--json]`              | one line per entry: headers only, no payload   |
| `cache info KEY`                               | one entry's header (a unique key prefix works) |
| `cache clear [--task NAME] [--older-than 7d]`  | remove entries, after asking unless `--yes`    |
| `cache explain FILE[:FLOW] [--param k=v]...`   | run the flow, then hit or miss and why, per call |

The store is the one a flow run would use: `$DAGRUN_RESULTS`, else `$DAGRUN_HOME/results`
(`--store` overrides, for a flow declared with `result_storage=`). Listing reads entry
headers only, never a payload, so it is cheap on any store and safe on untrusted ones.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

import click

from dagrun.errors import ConfigError, DagrunError
from dagrun.results import EntryInfo, ResultStore

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_HEX = re.compile(r"[0-9a-f]+")
_SHOWN_KEY = 16  # characters of a key shown in tables: enough to be unique, short enough to read

_store_option = click.option(
    "--store", "location", metavar="PATH_OR_URL",
    help="The result store (default: $DAGRUN_RESULTS, else $DAGRUN_HOME/results).",
)


def parse_duration(text: str, option: str) -> float:
    """Seconds in `7d`, `12h`, `30m`, `90s` (or `2w`); a ConfigError naming `option` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            f"Invalid {option} {text!r}: give a number and a unit (s, m, h, d, w), like 7d, 12h, 30m or 90s"
        )
    return float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"


def _expires(info: EntryInfo, now: float) -> str:
    if info.expires_at is None:
        return "never"
    return _when(info.expires_at) + (" (expired)" if info.expires_at <= now else "")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{scaled:.1f} {unit}"


def _as_json(info: EntryInfo, now: float) -> dict[str, Any]:
    return {
        "key": info.key, "task": info.task_name, "size": info.size, "created": info.created,
        "expires": info.expires_at, "expired": info.expires_at is not None and info.expires_at <= now,
        "serializer": info.serializer, "checksum": info.checksum, "path": info.path,
    }


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _find(store: ResultStore, key: str) -> EntryInfo:
    """The entry whose key is `key` or starts with it; a ConfigError if none or several do."""
    key = key.strip().lower()
    if _HEX.fullmatch(key) is None:
        raise ConfigError(f"Invalid cache key {key!r}: a key (or its prefix) is lowercase hex digits")
    if len(key) >= 16:  # possibly a whole key: one header read instead of a listing
        info = store.info(key) if len(key) <= 128 else None
        if info is not None:
            return info
    matches = [info for info in store.entries() if info.key.startswith(key)]
    if not matches:
        raise ConfigError(f"No cache entry with key {key} in {store.location} (see `dagrun cache ls`)")
    if len(matches) > 1:
        shown = ", ".join(info.key[:_SHOWN_KEY] for info in matches[:5])
        raise ConfigError(f"Key prefix {key} matches {len(matches)} entries ({shown}...): give more digits")
    return matches[0]


@click.group("cache")
def cache_group() -> None:
    """Inspect and clear cached task results, and explain cache hits and misses."""


@cache_group.command("ls")
@click.option("--task", "task_name", metavar="NAME", help="Only entries of this task.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (full keys, POSIX times).")
@_store_option
def cache_ls(task_name: str | None, as_json: bool, location: str | None) -> None:
    """Cached results, newest first: key, task, size, created, expires, serializer."""
    store = ResultStore.from_env(location)
    entries = sorted(store.entries(task_name), key=lambda info: info.created, reverse=True)
    now = time.time()
    if as_json:
        click.echo(json.dumps([_as_json(info, now) for info in entries], indent=2))
        return
    if not entries:
        click.echo(f"No cache entries{f' of task {task_name!r}' if task_name else ''} in {store.location}.")
        return
    rows = [
        [info.key[:_SHOWN_KEY], info.task_name, _size(info.size), _when(info.created), _expires(info, now),
         info.serializer]
        for info in entries
    ]
    _table(["KEY", "TASK", "SIZE", "CREATED", "EXPIRES", "SERIALIZER"], rows)


@cache_group.command("info")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_store_option
def cache_info(key: str, as_json: bool, location: str | None) -> None:
    """One entry's header. KEY may be a prefix of the key, if only one entry starts with it."""
    store = ResultStore.from_env(location)
    info = _find(store, key)
    now = time.time()
    if as_json:
        click.echo(json.dumps(_as_json(info, now), indent=2))
        return
    fields = [
        ("Key", info.key), ("Task", info.task_name), ("Size", f"{_size(info.size)} ({info.size} bytes)"),
        ("Created", _when(info.created)), ("Expires", _expires(info, now)), ("Serializer", info.serializer),
        ("Checksum", info.checksum), ("Path", info.path),
    ]
    for name, value in fields:
        click.echo(f"{name + ':':<12}{value}")


@cache_group.command("clear")
@click.option("--task", "task_name", metavar="NAME", help="Only entries of this task.")
@click.option("--older-than", "older_than", metavar="DURATION", help="Only entries created longer ago: 7d, 12h, 30m, 90s.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_store_option
def cache_clear(task_name: str | None, older_than: str | None, yes: bool, location: str | None) -> None:
    """Remove cached results (all of them unless --task or --older-than narrow it)."""
    seconds = None if older_than is None else parse_duration(older_than, "--older-than")
    store = ResultStore.from_env(location)
    if not yes:
        cutoff = None if seconds is None else time.time() - seconds
        count = sum(1 for info in store.entries(task_name) if cutoff is None or info.created < cutoff)
        if count:
            scope = (f" of task '{task_name}'" if task_name else "") + (
                f" older than {older_than}" if older_than else "")
            click.confirm(f"Remove {count} cache {_entries(count)}{scope} from {store.location}?", abort=True)
    removed = store.clear(task_name=task_name, older_than=seconds)
    click.echo(f"Removed {removed} cache {_entries(removed)}.")


def _entries(count: int) -> str:
    return "entry" if count == 1 else "entries"


@cache_group.command("explain")
@click.argument("target", metavar="FILE[:FLOW]")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A flow parameter (repeatable).")
@click.option("--address", help="Attach to a running Dask scheduler, e.g. tcp://127.0.0.1:8786.")
@click.option("--cluster", help="A cluster config name (cluster_configs/NAME.yaml) or path.")
def cache_explain(target: str, params: tuple[str, ...], address: str | None, cluster: str | None) -> None:
    """Run a flow and say, for each cached task run, hit or miss and why it missed.

    This RUNS the flow: a dynamic flow's task calls (and so their cache keys) are only known
    by running it. Misses are computed and stored as in `dagrun run`, so a second explain of
    an unchanged flow shows hits. Reasons: no entry, code changed, argument 'x' changed,
    upstream 'x' changed, expired, refresh requested, cache_key_fn returned None. Task runs
    of subflows are not listed.
    """
    from dagrun.cli.loading import flow_invocation, report_failed_run
    from dagrun.engine import FlowRunEngine, run_flow

    flow, parameters, executor = flow_invocation(target, params, address, cluster)
    engines: list[FlowRunEngine] = []
    state = run_flow(flow, (), parameters, return_state=True, executor=executor, observe=engines.append)
    error = state.exception if not state.is_completed() else None
    if isinstance(error, DagrunError) and error.exit_code == 2 and not engines:
        raise error  # bad parameters: nothing ran
    planner = engines[0].tasks.planner if engines and engines[0].tasks is not None else None
    decisions = planner.decisions if planner is not None else []
    if not decisions:
        click.echo(f"No cached task ran in flow '{flow.name}' (only tasks with cache=True or cache_key_fn are cached).")
    width = max((len(run_name) for run_name, _ in decisions), default=0)
    for run_name, decision in decisions:
        if decision.hit:
            click.echo(f"{run_name:<{width}}  hit   (key {decision.parts.key[:12]}...)")
        else:
            click.echo(f"{run_name:<{width}}  miss  {decision.reason}")
    if error is not None:
        report_failed_run(state)
