"""The task wrapper: what actually executes on a worker (or in-process) for one task run.

It sets the task-run context, holds the task's concurrency-limit slots (when the executor
enforces limits), runs the user's function under its retry policy and timeout,
logs each retry, and checks that the returned value can travel to other workers. It imports
nothing that needs the driver, the run history or a specific executor.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import cloudpickle

from dagrun.async_support import is_async, sync_callable
from dagrun.context import LogSink, TaskRunContext, task_run_scope
from dagrun.cache_keys import expiry_time
from dagrun.errors import FailedStateError, ResultStoreError, SerializationError
from dagrun.content_hashing import content_hash
from dagrun.results import CacheMiss, ResultStore
from dagrun.results.serializers import dumps
from dagrun.log_cap import CappedLog, log_cap_bytes
from dagrun.logs import capture_prints, make_log_line
from dagrun.nested import arrived
from dagrun.retry import call_with_retries
from dagrun.secrets import mask_exception, remember, remember_secrets_in
from dagrun.state_hooks import TaskRunRecord, with_running_hooks
from dagrun.states import State
from dagrun.task_events import AttemptReporter, EventSink
from dagrun.tracebacks import capture as capture_traceback

_PLAIN_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray, range})
_CONTAINER_TYPES = frozenset({list, tuple, set, frozenset, dict})
_TRUSTED_MODULES = ("numpy", "pandas", "pyarrow", "scipy", "xarray")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What every call of one task in one flow run shares.

    Executors send it to each worker once rather than with every call, so a 20,000-item map
    costs the scheduler 20,000 small keys, not 20,000 copies of the function and its options.
    """

    task: Any
    flow_run_id: str | None
    flow_run_name: str | None
    log_prints: bool
    store: ResultStore | None = None  # where a cached task's worker writes its result
    report: bool = False  # send each attempt's start and end to the run's events (run history)
    # Held around all attempts of a call: one slot per tag of the task that has a concurrency
    # limit. Set by an executor that enforces limits cluster-wide (Dask); None runs at once.
    concurrency_slots: Callable[[], AbstractContextManager[Any]] | None = None
    # Bytes of log per attempt (see `dagrun.log_cap`), read from the driver's environment so
    # remote workers follow it; 0 means no cap, None this process's DAGRUN_LOG_CAP_BYTES.
    log_cap_bytes: int | None = None
    # Secret values the driver knows, masked in this task's lines before they leave the worker.
    secret_values: tuple[str, ...] = ()


class SharedSpec:
    """A `TaskSpec` travelling as pickled bytes: the driver pickles it once per flow run, and a
    worker unpickles the same bytes once, then reuses the object for every call that carries
    them (so a function shipped by value is not rebuilt per call)."""

    __slots__ = ("digest", "payload")

    def __init__(self, digest: str, payload: bytes) -> None:
        self.digest = digest
        self.payload = payload

    @classmethod
    def of(cls, spec: TaskSpec) -> SharedSpec:
        payload = cloudpickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        return cls(hashlib.blake2b(payload, digest_size=16).hexdigest(), payload)

    def __reduce__(self) -> tuple:
        # Stays bytes through the scheduler (which forwards, never runs, the call).
        return (SharedSpec, (self.digest, self.payload))

    def load(self) -> TaskSpec:
        """The spec, unpickled the first time this process sees these bytes."""
        spec = _UNPICKLED_SPECS.get(self.digest)
        if spec is None:
            if len(_UNPICKLED_SPECS) >= _UNPICKLED_SPECS_LIMIT:
                _UNPICKLED_SPECS.pop(next(iter(_UNPICKLED_SPECS)))  # oldest first
            spec = _UNPICKLED_SPECS[self.digest] = pickle.loads(self.payload)
        return spec


_UNPICKLED_SPECS: dict[str, TaskSpec] = {}  # per process: digest -> spec (a bounded cache)
_UNPICKLED_SPECS_LIMIT = 512


def run_task(
    spec: TaskSpec,
    task_run_id: str,
    index: int | str,
    args: tuple,
    kwargs: dict,
    log_sink: LogSink,
    cache_key: str | None = None,
    events: EventSink | None = None,
) -> Any:
    """Run task run `<task name>-<index>` to its final outcome; exceptions from user code
    propagate unchanged.

    With a `cache_key`, the result is also written to the spec's store, and the
    `TaskRunFinished` record sent to `events` carries its checksum and size (no data) for
    downstream keys. With `spec.report`, every attempt's start, failure and the run's end go to
    `events` too (`dagrun.task_events`), for the run history.
    """
    task = spec.task
    args, kwargs = arrived(args), arrived(kwargs)  # dataclasses and models that held futures
    cap = spec.log_cap_bytes if spec.log_cap_bytes is not None else log_cap_bytes()
    capped = CappedLog(log_sink, cap or None)  # the run's lines; records go to log_sink
    context = TaskRunContext(
        task=task,
        task_run_id=task_run_id,
        task_run_name=f"{task.name}-{index}",
        flow_run_id=spec.flow_run_id,
        flow_run_name=spec.flow_run_name,
        log_sink=capped,
        log_prints=spec.log_prints,
    )
    if spec.log_prints:
        capture_prints()
    remember(*spec.secret_values)  # so that this task's lines are masked here, on the worker
    remember_secrets_in(args)
    if kwargs:
        remember_secrets_in(kwargs.values())

    reporter = AttemptReporter(spec.flow_run_id, task_run_id, events, spec.report)

    def on_retry(attempt: int, delay: float, exception: BaseException) -> None:
        capped.end_attempt()
        mask_exception(exception)  # before the views are rendered: they go to the driver too
        views = capture_traceback(exception)
        message = (
            f"Retry {attempt}/{task.retry_policy.retries} of '{task.name}' in {delay:.1f} s "
            f"after {type(exception).__name__}: {exception}"
        )
        capped(make_log_line(context, logging.WARNING, message, "dagrun.task_run"))
        reporter.failed(exception, views.user, views.full, retrying=True, message=message)

    # Slots are taken before the first attempt and given back after the last (also on
    # failure); a retry delay keeps them, so a retrying run is not overtaken by waiting runs.
    slots = spec.concurrency_slots() if spec.concurrency_slots is not None else nullcontext()
    returned_message = ""  # a returned state's message is the run's, as in Prefect
    try:
        with task_run_scope(context), slots:
            fn, timeout = task.fn, task.timeout_seconds
            if is_async(fn):  # its own loop per attempt; a timeout cancels the coroutine
                fn, timeout = sync_callable(fn, timeout), None
            if task.on_running_hooks:  # called as each attempt starts, here where it runs
                record = TaskRunRecord(task_run_id, context.task_run_name, task.name, spec.flow_run_id, cache_key)
                fn = with_running_hooks(fn, task, record, lambda line: capped(
                    make_log_line(context, logging.ERROR, line, "dagrun.hooks")
                ))
            value, _ = call_with_retries(
                reporter.attempts(fn),  # an attempt starts once the slots are held
                args,
                kwargs,
                policy=task.retry_policy,
                timeout=timeout,
                task=task,
                on_retry=on_retry,
            )
        if type(value) is State:  # as in Prefect: a returned state is the run's outcome
            returned_message = value.message
            value = returned_state_value(value)
        if cache_key is not None and spec.store is not None:
            entry = spec.store.put(
                cache_key, value, task_name=task.name, serializer=task.result_serializer or "auto",
                expires_at=expiry_time(task),
            )
            reporter.finished(cache_key, entry.size, entry.checksum, returned_message)
        else:
            check_serializable(value, task.name)
            reporter.finished(message=returned_message)
        return value
    except BaseException as exception:
        mask_exception(exception)  # its message goes to the driver, Dask's logs and the history
        if isinstance(exception, Exception):
            capture_traceback(exception)  # rendered here, where the user's frames and files are
        reporter.failed(exception, retrying=False, message=returned_message)
        raise
    finally:
        capped.end_attempt()


def returned_state_value(state: State) -> Any:
    """The value of a task that returned a `State`: a completed one's data; a failed one
    (`Failed(message=...)`) raises its exception, so the task run fails."""
    if state.is_completed():
        return state.result()
    raise state.exception or FailedStateError(state.message or f"Task returned a {state.name} state")


def load_result(spec: TaskSpec, cache_key: str) -> Any:
    """A cached task's value, read (and verified) from the store where it is needed."""
    assert spec.store is not None  # only cached tasks are loaded, and their spec has a store
    try:
        return spec.store.get(cache_key)
    except CacheMiss as miss:
        raise ResultStoreError(
            f"The cached result of task '{spec.task.name}' (key {cache_key[:12]}...) is no longer "
            f"usable ({miss.reason}); run the flow again to recompute it"
        ) from None


def result_content_hash(value: Any, serializer: str | None) -> str:
    """The content hash a store entry of `value` would have; for keys downstream of uncached tasks."""
    _, frames = dumps(value, serializer or "auto")
    return content_hash(frames)


def check_serializable(value: Any, task_name: str) -> None:
    """Fail now, naming the type, if `value` could not be sent to another worker or the driver.

    Plain data and array libraries' objects are trusted without a trial; anything else is
    pickled once, which is what Dask would do anyway the first time the value moves.
    """
    kind = type(value)
    if kind in _PLAIN_TYPES or kind.__module__.split(".")[0] in _TRUSTED_MODULES:
        return
    if kind in _CONTAINER_TYPES and _is_shallow_plain(value):
        return
    try:
        cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"Task '{task_name}' returned a value of type '{kind.__module__}.{kind.__qualname__}' "
            f"that cannot be serialized: {type(exc).__name__}: {exc}. Return plain data "
            "(or an object that pickles) instead."
        ) from None


def _is_shallow_plain(value: Any, limit: int = 10_000) -> bool:
    if len(value) > limit:
        return False
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    return all(type(k) in _PLAIN_TYPES and type(v) in _PLAIN_TYPES for k, v in items)
