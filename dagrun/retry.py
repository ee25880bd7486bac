"""Retry policies, and the call-with-retries loop that runs user code on a worker.

This module runs on workers: it imports nothing from the engine, the executors or the CLI.

| option                  | accepted values                                             |
|-------------------------|-------------------------------------------------------------|
| `retries`               | int >= 0                                                    |
| `retry_delay_seconds`   | number, list of numbers (last repeats), `attempt -> seconds` |
| `retry_jitter_factor`   | None or float >= 0: delay * (1 + uniform(-f, f)), min 0      |
| `retry_on`              | exception type or tuple of them (others fail at once)       |
| `retry_condition_fn`    | `(task, task_run, state) -> bool` (Prefect's), see retry_conditions |
| `timeout_seconds`       | None or number > 0: the attempt fails with TaskTimeoutError  |
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dagrun.errors import ConfigError, TaskTimeoutError
from dagrun.retry_conditions import should_retry as condition_allows_retry

DelaySpec = float | int | Sequence[float] | Callable[[int], float]


def exponential_backoff(backoff_factor: float) -> Callable[[int], float]:
    """Delays `backoff_factor * 2 ** (attempt - 1)`: the 1st retry waits `backoff_factor`, the
    2nd twice that, ... (Prefect's delays; also importable from `dagrun.tasks`)."""
    if not _is_non_negative_number(backoff_factor):
        raise ConfigError(f"exponential_backoff(backoff_factor=...) needs a number >= 0, got {backoff_factor!r}")

    def delay(attempt: int) -> float:
        return backoff_factor * 2 ** (attempt - 1)

    delay.__qualname__ = f"exponential_backoff({backoff_factor})"
    return delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one task retries failures raised by its own code; validated on construction."""

    retries: int = 0
    delay: DelaySpec = 0
    jitter_factor: float | None = None
    retry_on: tuple[type[BaseException], ...] | None = None
    condition: Callable[..., bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ConfigError(f"retries must be an int >= 0, got {self.retries!r}")
        delay = self.delay
        if isinstance(delay, (list, tuple)):
            if not delay or not all(_is_non_negative_number(d) for d in delay):
                raise ConfigError(
                    f"retry_delay_seconds list must hold numbers >= 0, got {list(delay)!r}"
                )
            object.__setattr__(self, "delay", tuple(float(d) for d in delay))
        elif not callable(delay) and not _is_non_negative_number(delay):
            raise ConfigError(
                "retry_delay_seconds must be a number >= 0, a list of them, "
                f"or a callable attempt -> seconds; got {delay!r}"
            )
        if self.jitter_factor is not None and not _is_non_negative_number(self.jitter_factor):
            raise ConfigError(f"retry_jitter_factor must be a number >= 0, got {self.jitter_factor!r}")
        if self.retry_on is not None:
            retry_on = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
            if not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on):
                raise ConfigError(f"retry_on must be exception types, got {self.retry_on!r}")
            object.__setattr__(self, "retry_on", retry_on)
        if self.condition is not None and not callable(self.condition):
            raise ConfigError(f"retry_condition_fn must be callable, got {self.condition!r}")

    def should_retry(self, task: Any, exception: BaseException, attempt: int) -> bool:
        """Whether failed attempt number `attempt` (1-based) gets another try."""
        if attempt > self.retries:
            return False
        if self.retry_on is not None and not isinstance(exception, self.retry_on):
            return False
        if self.condition is not None:
            return condition_allows_retry(self.condition, task, exception, attempt)
        return True

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based), jitter applied."""
        delay = self.delay
        if callable(delay):
            seconds = float(delay(attempt))
        elif isinstance(delay, tuple):
            seconds = delay[min(attempt, len(delay)) - 1]
        else:
            seconds = float(delay)
        if self.jitter_factor:
            seconds *= 1 + random.uniform(-self.jitter_factor, self.jitter_factor)
        return max(0.0, seconds)


def _is_non_negative_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def call_with_timeout(fn: Callable[..., Any], args: tuple, kwargs: dict, timeout: float | None) -> Any:
    """Call `fn`; with a timeout, run it in a helper thread and stop waiting when it expires.

    Python cannot kill a thread, so a timed-out call keeps running in the background until it
    returns; its result is discarded. The thread is a daemon so it never blocks shutdown.
    """
    if timeout is None:
        return fn(*args, **kwargs)
    outcome: list[Any] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(fn, *args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="dagrun-timeout", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise TaskTimeoutError(f"attempt exceeded timeout_seconds={timeout}")
    ok, value = outcome[0]
    if ok:
        return value
    raise value


def call_with_retries(
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    policy: RetryPolicy,
    timeout: float | None,
    task: Any,
    on_retry: Callable[[int, float, BaseException], None],
) -> tuple[Any, int]:
    """Run `fn` until it returns or the policy gives up; returns (value, attempts made).

    `on_retry(attempt, delay, exception)` is called before each wait so the caller can log it.
    The final exception is re-raised unchanged so users see their own type and message.
    """
    attempt = 1
    while True:
        try:
            return call_with_timeout(fn, args, kwargs, timeout), attempt
        except Exception as exc:
            if not policy.should_retry(task, exc, attempt):
                exc.dagrun_attempts = attempt  # type: ignore[attr-defined]
                raise
            delay = policy.delay_for(attempt)
            on_retry(attempt, delay, exc)
            if delay:
                time.sleep(delay)
            attempt += 1
