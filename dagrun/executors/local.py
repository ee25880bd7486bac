"""An in-process executor: every task call runs at once, in the driver, in call order.

For debugging (a breakpoint in a task just works) and for fast unit tests. The semantics are
the engine's, so retries, failure propagation and states behave as on Dask; only concurrency
is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dagrun.executors.base import ERROR, FINISHED, Executor, ExecutorSession, Submission
from dagrun.runner import TaskSpec, load_result, result_content_hash, run_task
from dagrun.task_events import TaskEvent

WORKER_NAME = "in-process"  # the `worker` of task runs that ran here


class _Outcome:
    """An already-finished call: its value or its exception."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class _UpstreamError(Exception):
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _resolve(value: Any) -> Any:
    """Replace outcomes nested in `value` by their values (containers rebuilt, like Dask does)."""
    kind = type(value)
    if kind is _Outcome:
        if value.error is not None:
            raise _UpstreamError(value.error)
        return value.value
    if kind in (list, tuple, set, frozenset):
        return kind(_resolve(item) for item in value)
    if kind is dict:
        return {key: _resolve(item) for key, item in value.items()}
    return value


class InProcessSession(ExecutorSession):
    address = None

    def __init__(
        self, on_log: Callable[[dict], None], on_events: Callable[[Sequence[TaskEvent]], None] | None = None
    ) -> None:
        self._on_log = on_log
        self._on_events = on_events

    def _event(self, event: TaskEvent) -> None:
        if self._on_events is not None:  # same process, same clock: only `worker` to fill in
            self._on_events([event._replace(worker=WORKER_NAME)])

    def submit_many(self, submissions: Sequence[Submission]) -> list[_Outcome]:
        return [self._run(submission) for submission in submissions]

    def _run(self, submission: Submission) -> _Outcome:
        try:
            _resolve(submission.after)
            args, kwargs = _resolve(submission.args), _resolve(submission.kwargs)
        except _UpstreamError as upstream:
            return _Outcome(error=upstream.error)
        try:
            return _Outcome(value=run_task(
                submission.spec, submission.task_run_id, submission.index, args, kwargs, self._on_log,
                submission.cache_key, self._event,
            ))
        except Exception as exc:
            return _Outcome(error=exc)

    def load(self, spec: TaskSpec, cache_key: str, *, key: str) -> _Outcome:
        try:
            return _Outcome(value=load_result(spec, cache_key))
        except Exception as exc:
            return _Outcome(error=exc)

    def content_hash(self, handle: _Outcome, serializer: str | None) -> _Outcome:
        return _Outcome(value=result_content_hash(handle.value, serializer))

    def status(self, handle: _Outcome) -> str:
        return ERROR if handle.error is not None else FINISHED

    def wait(self, handles: Sequence[_Outcome], timeout: float | None) -> bool:
        return True

    def wait_any(self, handles: Sequence[_Outcome], timeout: float | None) -> None:
        return None

    def exception(self, handle: _Outcome) -> BaseException:
        assert handle.error is not None  # the engine asks only for handles with status ERROR
        return handle.error

    def gather(self, handles: Sequence[_Outcome]) -> list[Any]:
        for handle in handles:
            if handle.error is not None:
                raise handle.error
        return [handle.value for handle in handles]

    def cancel(self, handles: Iterable[_Outcome]) -> None:
        return None


class InProcessExecutor(Executor):
    """Run every task in the driver process, one after the other, as soon as it is called."""

    def start(
        self, on_log: Callable[[dict], None], on_events: Callable[[Sequence[TaskEvent]], None] | None = None
    ) -> InProcessSession:
        return InProcessSession(on_log, on_events)

    def __repr__(self) -> str:
        return "InProcessExecutor()"
