"""`@task`: a plain function that, inside a flow, runs as a tracked, retried Dask task.

| where the call happens     | `my_task(x)` does                                          |
|----------------------------|------------------------------------------------------------|
| inside a running flow      | submits at once and returns a `TaskFuture` (its value's stand-in) |
| inside a task, or no flow  | runs in this process (with retries) and returns the value  |
| `.submit()` / `.map()` in a task | nested runs on threads of this process (`dagrun.nested_runs`) |
| with `return_state=True`   | the call's final `State` (waits for it inside a flow)      |
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from dagrun.async_support import is_async, run_elsewhere
from dagrun.cache_keys import task_input_hash, validate_cache_options  # noqa: F401 - `dagrun.tasks.task_input_hash`, as in Prefect
from dagrun.cache_policies import CachePolicy, resolve_cache_options
from dagrun.context import current_flow_run, current_task_run
from dagrun.errors import ConfigError, DagrunError
from dagrun.call_sites import result_discarded
from dagrun.futures import FutureList, TaskFuture, allow_failure, unmapped
from dagrun.logs import print_log_line
from dagrun.nested_runs import NestedRuns
from dagrun.prefect_options import reject_options
from dagrun.retry import RetryPolicy, exponential_backoff  # noqa: F401 - `dagrun.tasks.exponential_backoff`, as in Prefect
from dagrun.run_names import RunName, check_run_name
from dagrun.runner import TaskSpec, run_task
from dagrun.state_hooks import HookLists
from dagrun.states import State, StateType

P = ParamSpec("P")
R = TypeVar("R")


class Task(HookLists, Generic[P, R]):
    """A function decorated with `@task`; `task.fn` is the undecorated function."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Iterable[str] = (),
        version: str | None = None,
        retries: int = 0,
        retry_delay_seconds: Any = 0,
        retry_jitter_factor: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        timeout_seconds: float | None = None,
        cache: bool = False,
        cache_key_fn: Callable[..., str | None] | None = None,
        cache_expiration: timedelta | float | None = None,
        refresh_cache: bool = False,
        result_serializer: str | None = None,
        resources: dict[str, float] | None = None,
        log_prints: bool | None = None,
        on_completion: Iterable[Callable] = (),
        on_failure: Iterable[Callable] = (),
        on_running: Iterable[Callable] = (),
        task_run_name: RunName = None,
        cache_policy: CachePolicy | None = None,
        persist_result: bool | None = None,
        **unsupported: Any,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"@task needs a function, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        reject_options("task", self.name, unsupported, _OPTIONS)
        check_run_name("task_run_name", self.name, fn, task_run_name)
        self.task_run_name = task_run_name
        self.description = description if description is not None else (fn.__doc__ or "").strip() or None
        self.tags = frozenset(tags)
        self.version = version
        self.retry_policy = RetryPolicy(
            retries=retries,
            delay=retry_delay_seconds,
            jitter_factor=retry_jitter_factor,
            retry_on=retry_on,
            condition=retry_condition_fn,
        )
        if timeout_seconds is not None and (not isinstance(timeout_seconds, (int, float)) or timeout_seconds <= 0):
            raise ConfigError(f"timeout_seconds of task '{self.name}' must be a number > 0, got {timeout_seconds!r}")
        self.timeout_seconds = timeout_seconds
        # As given, for with_options: the effective `cache` / `cache_policy` are derived below.
        self._cache_options = {"cache": cache, "cache_policy": cache_policy, "persist_result": persist_result}
        cache, self.cache_policy = resolve_cache_options(self.name, bool(cache), cache_policy, persist_result)
        self.cache = bool(cache or cache_key_fn is not None)
        self.cache_key_fn = cache_key_fn
        self.cache_expiration = cache_expiration
        self.refresh_cache = refresh_cache
        self.result_serializer = result_serializer
        if resources is not None and not all(isinstance(v, (int, float)) for v in resources.values()):
            raise ConfigError(f"resources of task '{self.name}' must map names to numbers, got {resources!r}")
        self.resources = dict(resources) if resources else None
        self.log_prints = log_prints
        self._set_hooks(on_completion, on_failure, on_running)  # `hook(task, run_record, state)`
        validate_cache_options(self)
        functools.update_wrapper(self, fn)

    # ---------------------------------------------------------------- calling
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        flow_run = current_flow_run()
        return_state = "return_state" in kwargs and not self._takes("return_state") and kwargs.pop("return_state")
        if flow_run is None or current_task_run() is not None:
            run_here = self._state_here if return_state else self._run_here
            if is_async(self.fn):  # a coroutine, as in Prefect: `asyncio.run(my_task())`
                return run_elsewhere(run_here, args, kwargs)  # type: ignore[return-value]
            return run_here(args, kwargs)  # type: ignore[return-value]
        wait_for = kwargs.pop("wait_for", ()) if "wait_for" in kwargs and not self._takes("wait_for") else ()
        # A call whose result the caller throws away is a step: see `dagrun.task_steps`.
        discarded = not return_state and result_discarded()
        tracker = flow_run.engine.tasks
        future = tracker.call(self, args, kwargs, wait_for, discarded)
        return tracker.state_of_call(future) if return_state else future  # type: ignore[return-value]

    def submit(self, *args: P.args, wait_for: Iterable[TaskFuture] = (), **kwargs: P.kwargs) -> TaskFuture[R]:
        """Submit a call in the running flow and return its future at once (never a step);
        `return_state=True` waits and returns its final `State`, as in Prefect."""
        return_state = "return_state" in kwargs and not self._takes("return_state") and kwargs.pop("return_state")
        tracker = self._tracker("submit")
        future = tracker.submit(self, args, kwargs, wait_for)
        return tracker.state_of_call(future) if return_state else future

    def map(self, *args: Any, wait_for: Iterable[TaskFuture] = (), **kwargs: Any) -> FutureList[R]:
        """One call per item of the iterable arguments, as Prefect maps: a future argument is
        waited for and its value mapped over; non-iterables, strings and `unmapped(x)` are
        passed whole to every call."""
        tracker = self._tracker("map")
        names = [f"argument {i + 1}" for i in range(len(args))] + [f"'{k}'" for k in kwargs]
        columns, lengths = [], {}
        for label, value in zip(names, [*args, *kwargs.values()]):
            column = map_column(value)
            if column is not None:
                lengths[label] = len(column)
            columns.append(column if column is not None else value.value if type(value) is unmapped else value)
        if not lengths:
            raise ConfigError(
                f"{self.name}.map() needs at least one iterable argument (a list, a range, a future of a list)"
            )
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{self.name}.map(): iterables differ in length: {lengths}")
        count = next(iter(lengths.values()))
        mapped = [type(column) is _Column for column in columns]  # never `isinstance`: see TaskFuture.__class__
        keys = list(kwargs)
        calls = []
        for i in range(count):
            row = [column[i] if is_mapped else column for column, is_mapped in zip(columns, mapped)]
            calls.append((tuple(row[: len(args)]), dict(zip(keys, row[len(args):]))))
        return FutureList(tracker.submit_many(self, calls, wait_for))

    # Prefect's attributes of a task's retry options, read from its policy.
    @property
    def retries(self) -> int:
        return self.retry_policy.retries

    @property
    def retry_delay_seconds(self) -> Any:
        """As Prefect keeps it: a number or a list as given; a callable (such as
        `exponential_backoff(...)`) expanded to one delay per retry."""
        delay = self.retry_policy.delay
        if callable(delay):
            return [delay(attempt) for attempt in range(1, self.retries + 1)]
        return list(delay) if isinstance(delay, (list, tuple)) else delay

    @property
    def retry_jitter_factor(self) -> float | None:
        return self.retry_policy.jitter_factor

    @property
    def retry_condition_fn(self) -> Callable[..., bool] | None:
        return self.retry_policy.condition

    def with_options(self, **changes: Any) -> Task[P, R]:
        """A copy of this task with some decorator options changed."""
        options = {**self._options(), **changes}
        return Task(self.fn, **options)

    # ---------------------------------------------------------------- helpers
    def _options(self) -> dict[str, Any]:
        policy = self.retry_policy
        return {
            "name": self.name, "description": self.description, "tags": self.tags,
            "version": self.version, "retries": policy.retries,
            "retry_delay_seconds": policy.delay, "retry_jitter_factor": policy.jitter_factor,
            "retry_on": policy.retry_on, "retry_condition_fn": policy.condition,
            "timeout_seconds": self.timeout_seconds, **self._cache_options,
            "cache_key_fn": self.cache_key_fn, "cache_expiration": self.cache_expiration,
            "refresh_cache": self.refresh_cache, "result_serializer": self.result_serializer,
            "resources": self.resources, "log_prints": self.log_prints,
            **self._hook_options(),
            "task_run_name": self.task_run_name,
        }

    def _tracker(self, method: str) -> Any:
        """Where `.submit()` / `.map()` send calls: the running flow's tracker, or inside a
        task, nested runs in this process (`dagrun.nested_runs`), as in Prefect."""
        if current_task_run() is not None:
            return NestedRuns(_run_nested)
        flow_run = current_flow_run()
        if flow_run is None:
            raise DagrunError(
                f"{self.name}.{method}() needs a running flow or task: call it inside a @flow or "
                f"@task function, or call {self.name}(...) directly to run it in this process"
            )
        return flow_run.engine.tasks

    def _takes(self, parameter: str) -> bool:
        return parameter in inspect.signature(self.fn).parameters

    def _state_here(self, args: tuple, kwargs: dict) -> State:
        """`return_state=True` outside a flow: the call's final state instead of its value."""
        try:
            return State(StateType.COMPLETED, data=self._run_here(args, kwargs))
        except Exception as exc:  # noqa: BLE001 - the state carries it, as Prefect's does
            return State(StateType.FAILED, message=f"{type(exc).__name__}: {exc}", exception=exc)

    def _run_here(self, args: tuple, kwargs: dict, run_id: str | None = None) -> R:
        """Run in this process, with retries and timeout, outside any flow's task tracking."""
        outer = current_task_run() or current_flow_run()
        log_prints = self.log_prints if self.log_prints is not None else bool(outer and outer.log_prints)
        spec = TaskSpec(
            self, outer.flow_run_id if outer else None, outer.flow_run_name if outer else None, log_prints
        )
        run_id = run_id or uuid.uuid4().hex
        if self.cache and outer is None:  # outside any run: in the result store, as in a flow
            from dagrun.direct_cache import call_cached  # driver-side: see the module docstring

            return call_cached(self, args, kwargs, f"{self.name}-{run_id[:6]}", lambda store, key: run_task(
                dataclasses.replace(spec, store=store), run_id, run_id[:6], args, kwargs, _print_lines_only, key
            ))
        return run_task(spec, run_id, run_id[:6], args, kwargs, outer.log_sink if outer else _print_lines_only)

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


class _Column(list):
    """The items one mapped argument gives its calls."""


def map_column(value: Any) -> _Column | None:
    """The items `task.map` gives each call for `value`, or None when it is passed whole.

    As Prefect: iterables are mapped (strings, bytes and files are not); a future is waited for
    and its value mapped over (a non-iterable value is passed as the future, a dependency);
    `allow_failure(iterable)` maps with each item wrapped again."""
    kind = type(value)
    if kind is unmapped:
        return None
    if kind is allow_failure:
        inner = map_column(value.value)
        return None if inner is None else _Column(allow_failure(item) for item in inner)
    if kind is TaskFuture:
        resolved = value.result()
        return _Column(resolved) if _iterable(resolved) else None
    return _Column(value) if _iterable(value) else None


def _iterable(value: Any) -> bool:
    if isinstance(value, (str, bytes, io.IOBase)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _run_nested(task: Task, args: tuple, kwargs: dict, run_id: str) -> Any:
    """A nested run's call (see `dagrun.nested_runs`), in the submitting task run's context."""
    return task._run_here(args, kwargs, run_id)


def _print_lines_only(line: dict) -> None:
    """Log sink of a task run outside any flow: prints its log lines (it has no run history)."""
    print_log_line(line)


_OPTIONS = tuple(name for name in inspect.signature(Task.__init__).parameters if name not in ("self", "fn", "unsupported"))


@overload
def task(fn: Callable[P, R]) -> Task[P, R]: ...
@overload
def task(
    fn: None = None, **options: Any
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """Decorate a function as a task: bare `@task` or `@task(retries=3, ...)`."""
    if fn is None:
        return lambda function: Task(function, **options)
    return Task(fn, **options)
