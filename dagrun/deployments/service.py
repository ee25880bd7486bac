"""`Service`: what `dagrun serve` runs. Each `tick(now)` starts the runs that are due and
settles the ones that ended; `serve_forever` is a thin real-time loop around it.

Policy
- A run is started only after it is claimed in the database (see `claims`): a schedule slot,
  a manual request or a trigger event starts exactly one run, however many services share
  the database and however often they restart.
- Slots come from `missed_slots`: after downtime `catchup=False` runs only the latest missed
  slot, `catchup=True` every missed slot, oldest first, at most `max_catchup`. A new
  deployment counts from when it was registered. A paused deployment's due slots are
  skipped, so resuming does not replay them.
- At `max_active_runs` (counted over every service) nothing more starts; a due slot waits
  (a newer slot replaces it unless `catchup`), triggers and manual requests queue.
- Every run is its own process (`processes`): a run that crashes never takes the service down.
  A run whose process ends without a final state in the history is recorded `Crashed` there.
- Claims of a service that died (no heartbeat within its lease) are settled by the others:
  from the history when the run recorded its end, `Crashed` when it did not, and a claim it
  never started is started by a service serving that deployment.
- `stop()` (SIGTERM): nothing new starts; running runs get `grace_period` seconds, then SIGINT
  (dagrun cancels them), then after `kill_after` seconds SIGKILL to their process groups. Runs
  that did not finish are recorded `Cancelled`. No process of theirs is left.

State kept: `running` (claim id -> `StartedRun`) for the runs this service started and has not
settled, and the scheduling states read at the last tick (for `seconds_to_next_tick`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dagrun.config import dagrun_home
from dagrun.deployments.claims import Claim, ClaimResult
from dagrun.deployments.declaration import Deployment, check_parameters
from dagrun.deployments.loading import check_unique_names
from dagrun.deployments.processes import RunProcess, launch_run, run_command, run_environment
from dagrun.deployments.settlement import HOST, StartedRun, settle_orphaned_claim, settle_run
from dagrun.deployments.store import DeploymentStore
from dagrun.errors import ConfigError
from dagrun.schedules import missed_slots
from dagrun.states import StateType

logger = logging.getLogger("dagrun.deployments")

UTC = timezone.utc
Launcher = Callable[[list[str], dict[str, str], Path], RunProcess]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Service:
    """Serves `deployments` from `store` (see the module docstring for the policy)."""

    def __init__(
        self,
        deployments: Sequence[Deployment],
        store: DeploymentStore,
        *,
        clock: Callable[[], datetime] = utc_now,
        poll_interval: float = 1.0,
        grace_period: float = 30.0,
        kill_after: float = 5.0,
        max_catchup: int = 100,
        launcher: Launcher = launch_run,
        log_dir: Path | None = None,
        source: str | None = None,
    ) -> None:
        check_unique_names(list(deployments), "dagrun serve")
        for name, value in (
            ("poll_interval", poll_interval),
            ("grace_period", grace_period),
            ("kill_after", kill_after),
        ):
            if not isinstance(value, (int, float)) or value < 0 or (name == "poll_interval" and value == 0):
                raise ConfigError(
                    f"{name} must be a number of seconds "
                    f"{'> 0' if name == 'poll_interval' else '>= 0'}, got {value!r}"
                )
        if max_catchup < 1:
            raise ConfigError(f"max_catchup must be >= 1, got {max_catchup}")
        self.deployments = {deployment.name: deployment for deployment in deployments}
        self.store = store
        self.clock = clock
        self.poll_interval = float(poll_interval)
        self.grace_period = float(grace_period)
        self.kill_after = float(kill_after)
        self.max_catchup = max_catchup
        self.launcher = launcher
        self.log_dir = log_dir or dagrun_home() / "serve-logs"
        self.source = source
        self.id = uuid.uuid4().hex
        self.lease_seconds = max(30.0, 10 * self.poll_interval)
        self.running: dict[str, StartedRun] = {}
        self._registered = False
        self._stopping = False
        self._states: dict[str, dict[str, Any]] = {}
        self._reported_waits: dict[str, str] = {}
        self._hurry = threading.Event()

    # --- one pass ---

    def register(self, now: datetime | None = None) -> None:
        """Record the deployments and this service in the store (the first tick does this)."""
        now = self._now(now)
        new = set(self.store.register(list(self.deployments.values()), now))
        self.store.start_service(
            self.id, host=HOST, pid=os.getpid(), source=self.source, now=now, lease_seconds=self.lease_seconds
        )
        self._registered = True
        for deployment in self.deployments.values():
            verb = "Registered" if deployment.name in new else "Updated"
            logger.info(
                "%s deployment '%s' (flow '%s', %s)",
                verb,
                deployment.name,
                deployment.flow.name,
                deployment.describe_schedule(),
            )

    def tick(self, now: datetime | None = None) -> list[str]:
        """Settle ended runs, then start what is due at `now`; return the started claim ids."""
        now = self._now(now)
        if not self._registered:
            self.register(now)
        self.reap(now)
        if self._stopping:
            return []
        self.store.heartbeat(self.id, now)
        self._settle_orphans(now)
        self._states = self.store.scheduling_states(list(self.deployments))
        started: list[str] = []
        for name, deployment in self.deployments.items():
            state = self._states.get(name)
            if state is None:
                continue
            started += self._fire_slots(deployment, state, now)
            if not state["paused"]:
                started += self._fire_triggers(deployment, now)
        return started + self._fire_requests(now)

    def reap(self, now: datetime | None = None, *, cancel_message: str | None = None) -> None:
        """Settle the runs whose process ended (with `cancel_message`: we stopped them)."""
        now = self._now(now)
        for claim_id, run in list(self.running.items()):
            code = run.process.poll()
            if code is not None:
                del self.running[claim_id]
                settle_run(self.store, run, code, now, cancel_message)

    # --- the real-time loop and the graceful stop ---

    def serve_forever(self, stop: threading.Event) -> None:
        """Tick until `stop` is set, waking at each due slot; then `stop()` gracefully."""
        try:
            self.register()
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - a busy or broken database must not end the service
                    logger.exception("Tick failed; trying again in %g s", self.poll_interval)
                stop.wait(self.seconds_to_next_tick())
        finally:
            self.stop()

    def seconds_to_next_tick(self, now: datetime | None = None) -> float:
        """`poll_interval`, or less when a slot falls due sooner (firing latency is the wait)."""
        now = self._now(now)
        wait = self.poll_interval
        for name, deployment in self.deployments.items():
            if self._states.get(name, {}).get("paused", False):
                continue
            for schedule in deployment.schedules:
                upcoming = schedule.next_slots(now, 1)
                if upcoming:
                    wait = min(wait, (upcoming[0] - now).total_seconds() + 0.001)
        return max(wait, 0.0)

    def stop(self, grace_period: float | None = None) -> None:
        """Start nothing more; give running runs `grace_period` s, then cancel what is left."""
        grace = self.grace_period if grace_period is None else grace_period
        self._stopping = True
        if self.running:
            logger.info(
                "Stopping: no new runs; waiting up to %g s for %d running run(s)", grace, len(self.running)
            )
        self._wait_for_runs(grace, None)
        message = (
            "Cancelled: `dagrun serve` stopped and the run did not finish within the "
            f"{grace:g} s grace period"
        )
        if self.running:
            for run in self.running.values():
                logger.warning(
                    "Cancelling run %s of deployment '%s': still running after the %g s grace period",
                    run.claim.id[:8],
                    run.claim.deployment,
                    grace,
                )
                run.process.interrupt()
            self._wait_for_runs(self.kill_after, message)
        for run in self.running.values():
            run.process.kill()
        self.reap(cancel_message=message)
        if self._registered:
            self.store.stop_service(self.id, self._now(None))
            self._registered = False
        logger.info("Stopped.")

    def hurry(self) -> None:
        """End a `stop()` in progress without waiting out the grace period (a second Ctrl-C)."""
        self._hurry.set()

    def _wait_for_runs(self, seconds: float, cancel_message: str | None) -> None:
        deadline = time.monotonic() + seconds
        last_heartbeat = time.monotonic()
        while True:
            self.reap(cancel_message=cancel_message)
            if not self.running or time.monotonic() >= deadline or self._hurry.is_set():
                return
            if self._registered and time.monotonic() - last_heartbeat >= self.poll_interval:
                self.store.heartbeat(self.id, self._now(None))
                last_heartbeat = time.monotonic()
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # --- what starts runs ---

    def _fire_slots(self, deployment: Deployment, state: dict[str, Any], now: datetime) -> list[str]:
        if not deployment.schedules:
            return []
        last = (
            datetime.fromisoformat(state["last_slot"])
            if state["last_slot"]
            else datetime.fromtimestamp(state["registered_at"], UTC)
        )
        wanted = self.max_catchup if deployment.catchup else 1
        due = sorted(
            {
                slot
                for schedule in deployment.schedules
                for slot in missed_slots(schedule, last, now, catchup=deployment.catchup, max_catchup=wanted)
            }
        )[-wanted:]
        if not due:
            return []
        if state["paused"]:
            self.store.skip_slot(deployment.name, due[-1])
            logger.info(
                "Skipped %d slot(s) of paused deployment '%s' (latest %s)",
                len(due),
                deployment.name,
                due[-1].isoformat(),
            )
            return []
        started = []
        for slot in due:
            claim = Claim(
                uuid.uuid4().hex,
                deployment.name,
                "schedule",
                dict(deployment.parameters),
                slot=slot.isoformat(),
            )
            result = self._claim_and_start(deployment, claim, now, f"for slot {claim.slot}")
            if result is ClaimResult.CLAIMED:
                started.append(claim.id)
            elif result is ClaimResult.FULL:
                self._report_wait(deployment, f"slot {claim.slot}")
                break
        return started

    def _fire_triggers(self, deployment: Deployment, now: datetime) -> list[str]:
        started = []
        for trigger in deployment.triggers:
            for upstream in self.store.upstream_runs(deployment.name, trigger):
                parameters = dict(deployment.parameters)
                if trigger.parameter is not None:
                    parameters[trigger.parameter] = upstream["id"]
                claim = Claim(
                    uuid.uuid4().hex,
                    deployment.name,
                    "trigger",
                    parameters,
                    trigger_key=trigger.key,
                    upstream_run_id=upstream["id"],
                )
                source = (
                    f"deployment '{upstream['deployment']}'"
                    if trigger.after_deployment is not None
                    else f"flow '{upstream['flow_name']}'"
                )
                why = f"after {upstream['state']} run {upstream['id'][:8]} of {source}"
                result = self._claim_and_start(deployment, claim, now, why)
                if result is ClaimResult.CLAIMED:
                    started.append(claim.id)
                elif result is ClaimResult.FULL:
                    self._report_wait(deployment, f"trigger event {why}")
                    return started
        return started

    def _fire_requests(self, now: datetime) -> list[str]:
        started, full = [], set()
        for request in self.store.pending_requests(list(self.deployments)):
            deployment = self.deployments[request["deployment"]]
            if deployment.name in full:
                continue
            owner = f"manual run request {request['id']} of deployment {deployment.name!r}"
            try:
                parameters = check_parameters(
                    deployment.flow, {**deployment.parameters, **request["parameters"]}, owner=owner
                )
            except ConfigError as exc:
                self.store.refuse_request(request["id"], str(exc), now)
                logger.warning("Refused %s", exc)
                continue
            claim = Claim(uuid.uuid4().hex, deployment.name, "manual", parameters, request_id=request["id"])
            result = self._claim_and_start(deployment, claim, now, f"for manual request {request['id']}")
            if result is ClaimResult.CLAIMED:
                started.append(claim.id)
            elif result is ClaimResult.FULL:
                self._report_wait(deployment, f"manual request {request['id']}")
                full.add(deployment.name)
        return started

    def _claim_and_start(self, deployment: Deployment, claim: Claim, now: datetime, why: str) -> ClaimResult:
        result = self.store.claim(
            claim, service_id=self.id, now=now, max_active_runs=deployment.max_active_runs
        )
        if result is ClaimResult.CLAIMED:
            self._reported_waits.pop(deployment.name, None)
            self._start(deployment, claim, now, why)
        return result

    def _start(self, deployment: Deployment, claim: Claim, now: datetime, why: str) -> None:
        env = run_environment(deployment.name, claim.id, claim.slot, self.store.url)
        log_path = self.log_dir / deployment.name / f"{claim.id}.log"
        command = run_command(str(deployment.flow_file), deployment.flow, claim.parameters)
        started_at = time.time()
        try:
            process = self.launcher(command, env, log_path)
        except Exception as exc:  # noqa: BLE001 - one run that cannot start must not stop the others
            message = f"Crashed: its process could not start: {type(exc).__name__}: {exc}"
            self.store.finish(claim.id, state=StateType.CRASHED, now=now, message=message)
            logger.error("Run %s of deployment '%s' %s", claim.id[:8], deployment.name, message)
            return
        self.store.mark_started(claim.id, pid=process.pid, host=HOST, now=now)
        self.running[claim.id] = StartedRun(claim, str(deployment.flow.name), process, started_at, log_path)
        logger.info(
            "Started run %s of deployment '%s' %s (pid %d)", claim.id[:8], deployment.name, why, process.pid
        )

    def _report_wait(self, deployment: Deployment, what: str) -> None:
        if self._reported_waits.get(deployment.name) != what:
            self._reported_waits[deployment.name] = what
            logger.info(
                "Deployment '%s': %s waits: max_active_runs=%d reached",
                deployment.name,
                what,
                deployment.max_active_runs,
            )

    # --- how runs end ---

    def _settle_orphans(self, now: datetime) -> None:
        """Settle the open claims of services that are gone (see the module docstring)."""
        for row in self.store.orphaned_claims(self.id, now):
            if row["pid"] is not None:
                settle_orphaned_claim(self.store, row, now)
                continue
            deployment = self.deployments.get(row["deployment"])
            if deployment is None or not self.store.retake(
                row["id"], old_service=row["service_id"], new_service=self.id
            ):
                continue
            claim = Claim(
                row["id"],
                row["deployment"],
                row["reason"],
                row["parameters"],
                slot=row["slot"],
                request_id=row["request_id"],
                trigger_key=row["trigger_key"],
                upstream_run_id=row["upstream_run_id"],
            )
            self._start(deployment, claim, now, "claimed by a service that stopped before starting it")

    def _now(self, now: datetime | None) -> datetime:
        moment = self.clock() if now is None else now
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ConfigError(f"the service clock must give aware datetimes, got {moment.isoformat()}")
        return moment.astimezone(UTC)
