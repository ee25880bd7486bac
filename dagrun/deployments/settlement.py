"""How a run ends, as far as its service is concerned: its claim gets the final state and,
when the run could not record one itself, the history does too.

| the run's process ended and the history says           | claim and history become             |
|--------------------------------------------------------|--------------------------------------|
| a final state                                          | that state (the run recorded it)     |
| nothing final, and the service stopped it (`stop()`)   | `Cancelled`                          |
| nothing at all, exit code 0 (`DAGRUN_HISTORY=off`)     | `Completed` (claim only)             |
| nothing final otherwise (killed, crashed, exited early)| `Crashed`, with the exit and last output |

A run with no record yet gets one, so every run a service started is in `dagrun runs ls`.
A claim left open by a service that died is settled from the history the same way; while
the history shows its run alive (heartbeat lease current) it stays open and keeps counting
against `max_active_runs`.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dagrun.deployments.claims import Claim
from dagrun.deployments.processes import RunProcess, describe_exit, last_line
from dagrun.deployments.store import DeploymentStore
from dagrun.history import FlowRunStarted, FlowRunState
from dagrun.states import FLOW_RUN_TRANSITIONS, StateType, check_transition

logger = logging.getLogger("dagrun.deployments")

HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class StartedRun:
    """A run a service started: its claim, its process and when it started (history clock)."""

    claim: Claim
    flow_name: str
    process: RunProcess
    started_at: float
    log_path: Path


def settle_run(
    store: DeploymentStore, run: StartedRun, code: int, now: datetime, cancel_message: str | None
) -> StateType:
    """Give the claim of `run`, whose process exited with `code`, its final state; return it."""
    record = store.recorded_run({"id": run.claim.id})
    recorded = StateType(record["state"]) if record is not None else None
    if recorded is not None and recorded.is_final:
        state, message = recorded, record["message"] or None
    elif cancel_message is not None:
        state, message = StateType.CANCELLED, cancel_message
        record_end(store, run, record, state, message)
    elif record is None and code == 0:
        state, message = StateType.COMPLETED, None
    else:
        output = last_line(run.log_path)
        state = StateType.CRASHED
        message = f"Crashed: its process {describe_exit(code)} before recording a final state" + (
            f"; last output: {output}" if output else ""
        )
        record_end(store, run, record, state, message)
    store.finish(run.claim.id, state=state, now=now, exit_code=code, message=message)
    level = logging.INFO if state is StateType.COMPLETED else logging.WARNING
    detail = f": {message}" if message and state in (StateType.CRASHED, StateType.CANCELLED) else ""
    logger.log(
        level, "Run %s of deployment '%s' ended %s%s", run.claim.id[:8], run.claim.deployment, state.value, detail
    )
    return state


def record_end(
    store: DeploymentStore, run: StartedRun, record: dict[str, Any] | None, state: StateType, message: str
) -> None:
    """Write the run's final state to the history, creating its record (`Running`) if it has
    none; the move is checked against the flow-run transition table."""
    current = StateType(record["state"]) if record is not None else StateType.RUNNING
    check_transition(current, state, run=f"flow run {run.claim.id[:8]}", table=FLOW_RUN_TRANSITIONS)
    events: list[Any] = []
    if record is None:
        events.append(
            FlowRunStarted(
                flow_run_id=run.claim.id,
                flow_name=run.flow_name,
                flow_run_name=f"{run.flow_name}-{run.claim.id[:6]}",
                parameters=dict(run.claim.parameters),
                start_time=run.started_at,
                parent_flow_run_id=None,
                parent_task_run_id=None,
                executor=None,
                address=None,
                host=HOST,
                pid=run.process.pid,
                deployment=run.claim.deployment,
                slot=run.claim.slot,
            )
        )
    events.append(FlowRunState(run.claim.id, state.value, time.time(), message, error=message))
    store.history.apply(events)


def settle_orphaned_claim(store: DeploymentStore, claim: dict[str, Any], now: datetime) -> None:
    """Settle a started claim whose service is gone, unless its run is still alive."""
    record = store.recorded_run(claim)
    recorded = StateType(record["state"]) if record is not None else None
    if recorded is not None and not recorded.is_final:
        return  # its driver is alive: the run still counts against max_active_runs
    if recorded is not None:
        state, message = recorded, record["message"] or None
    else:
        state, message = StateType.CRASHED, "Crashed: its `dagrun serve` stopped and the run recorded no state"
    store.finish(claim["id"], state=state, now=now, message=message)
    logger.info(
        "Settled run %s of deployment '%s' left by a stopped service: %s",
        claim["id"][:8],
        claim["deployment"],
        state.value,
    )
