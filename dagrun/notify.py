"""Built-in failure notifiers: a generic JSON webhook and a Slack incoming-webhook message.

Each is sent with a timeout and a few retries, and only ever logs when the endpoint is down:
a notification never fails the flow it reports on.

    @flow(notify=[WebhookNotifier("https://ops.example.com/hooks/dagrun"),
                  SlackNotifier("https://hooks.slack.com/services/...")])
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any, Protocol

from dagrun.errors import ConfigError
from dagrun.states import State

logger = logging.getLogger("dagrun.notify")


class FlowRunFacts(Protocol):
    """What a notifier learns about the run it reports on (`dagrun.hooks.FlowRunRecord`)."""

    id: str
    name: str
    flow_name: str
    start_time: float | None
    end_time: float | None
    failed_task: str | None


class Notifier(Protocol):
    def notify(self, run: FlowRunFacts, state: State) -> None: ...


def failure_summary(run: FlowRunFacts, state: State) -> dict[str, Any]:
    """The facts a notification carries (the webhook's JSON body)."""
    duration = None
    if run.start_time is not None and run.end_time is not None:
        duration = round(run.end_time - run.start_time, 3)
    error = state.exception
    return {
        "flow_name": run.flow_name,
        "flow_run_id": run.id,
        "flow_run_name": run.name,
        "state": state.type.value,  # "Failed" / "Crashed", also for a custom-named state
        "failed_task": run.failed_task,
        "error": f"{type(error).__name__}: {error}".splitlines()[0] if error is not None else state.message,
        "duration_seconds": duration,
        "start_time": run.start_time,
        "end_time": run.end_time,
    }


class WebhookNotifier:
    """POSTs `failure_summary` as JSON to `url`."""

    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 2, retry_delay: float = 0.5) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"A notifier URL must start with http:// or https://, got {url!r}")
        self.url, self.timeout, self.retries, self.retry_delay = url, timeout, retries, retry_delay

    def payload(self, run: FlowRunFacts, state: State) -> dict[str, Any]:
        return failure_summary(run, state)

    def notify(self, run: FlowRunFacts, state: State) -> None:
        body = json.dumps(self.payload(run, state)).encode()
        for attempt in range(1, self.retries + 2):
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if response.status < 300:
                        return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = exc
            else:
                error = RuntimeError(f"HTTP {response.status}")
            if attempt <= self.retries:
                time.sleep(self.retry_delay * attempt)
        logger.warning("Could not notify %s about flow run %s: %s", type(self).__name__, run.name, error)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class SlackNotifier(WebhookNotifier):
    """Posts a one-message summary to a Slack incoming webhook."""

    def payload(self, run: FlowRunFacts, state: State) -> dict[str, Any]:
        facts = failure_summary(run, state)
        task = f" in task `{facts['failed_task']}`" if facts["failed_task"] else ""
        duration = f" after {facts['duration_seconds']:.1f} s" if facts["duration_seconds"] is not None else ""
        text = (
            f":x: Flow `{facts['flow_name']}` run `{facts['flow_run_name']}` ({facts['flow_run_id']}) "
            f"{facts['state']}{duration}{task}: {facts['error']}"
        )
        return {"text": text}


def notifiers_from(notify: Any) -> list[Notifier]:
    """`notify=` as a list: a notifier, a webhook URL string, or a list of those."""
    if notify is None:
        return []
    items = notify if isinstance(notify, (list, tuple)) else [notify]
    notifiers: list[Notifier] = []
    for item in items:
        if isinstance(item, str):
            notifiers.append(WebhookNotifier(item))
        elif callable(getattr(item, "notify", None)):
            notifiers.append(item)
        else:
            raise ConfigError(f"notify= takes notifiers or webhook URLs, got {item!r}")
    return notifiers
