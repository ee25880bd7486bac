"""The driver's record of one task run, and what can be read off records alone.

A `TaskRun` is small and mutable (20,000 of them live as long as their flow run); only
`TaskRunTracker` changes it. The helpers here need nothing but records: the executor key of a
run's current submission, the upstream run that keeps it from running and the `NotRun` state
naming that root cause ("'c-0' did not run because 'b-0' <- 'a-0' failed").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dagrun.errors import UpstreamFailedError
from dagrun.states import State, StateType, transition

if TYPE_CHECKING:
    from dagrun.futures import TaskFuture


class TaskRun:
    """The driver's record of one task run; mutated only by `TaskRunTracker` (and `seen`, set
    by its `TaskFuture` when the flow looks at the outcome)."""

    __slots__ = (
        "id", "task", "index", "state", "handle", "upstream", "generation",
        "upstream_generations", "args", "kwargs", "wait_for", "resubmits", "free_resubmits", "future_ref",
        "fingerprint", "cache_key", "content_hash", "direct", "seen", "tolerated",
    )

    def __init__(self, run_id: str, task: Any, index: int, args: tuple, kwargs: dict) -> None:
        self.id = run_id
        self.task = task
        self.index = index
        self.state = _SUBMITTED
        self.handle: Any = None
        self.upstream: tuple[TaskRun, ...] = ()
        self.generation = 0
        self.upstream_generations: tuple[int, ...] = ()
        self.args: tuple | None = args
        self.kwargs: dict | None = kwargs
        self.wait_for: tuple = ()
        self.resubmits = 0
        self.free_resubmits = 0
        self.future_ref: Callable[[], TaskFuture | None] = _dead_ref
        self.fingerprint: str | None = None
        self.cache_key: str | None = None
        self.content_hash: str | None = None
        self.direct = False  # a direct call (not `.submit` / `.map`): its failure must be seen
        self.seen = False  # the flow looked at the outcome (state, result, wait, allow_failure)
        self.tolerated: tuple[TaskRun, ...] = ()  # upstream runs passed in `allow_failure(...)`

    @property
    def name(self) -> str:
        """`<task name>-<n>`: the n-th call of this task in its flow run."""
        return f"{self.task.name}-{self.index}"

    def enter(self, state: State) -> bool:
        """Move to `state` if the transition table allows it (else `IllegalTransition`);
        False when `state` repeats the run's final state, which then stands."""
        if transition(self.state, state, run=self) is not state:
            return False
        self.state = state
        return True

    def __str__(self) -> str:
        return f"task run '{self.name}'"


_SUBMITTED = State(StateType.PENDING, timestamp=0.0)  # shared: 20,000 runs need not each own one


def _dead_ref() -> None:
    return None


def dask_key(run: TaskRun) -> str:
    """The executor key of a run's current submission; a resubmission needs a new one (Dask
    answers a key it already knows with that key's old outcome)."""
    return f"{run.task.name}-{run.id}" + (f"-{run.generation}" if run.generation else "")


def failed_upstream(run: TaskRun) -> TaskRun | None:
    """The first upstream run that ended without completing: `run` cannot run after it (an
    upstream passed in `allow_failure(...)` does not count)."""
    return next(
        (
            up for up in run.upstream
            if up.state.is_final() and not up.state.is_completed() and up not in run.tolerated
        ),
        None,
    )


def not_run_state(run: TaskRun, blocked: TaskRun) -> State:
    """`NotRun` for `run`, naming the chain of runs back to the one that failed first."""
    chain = [blocked]
    while chain[-1].state.type is StateType.NOT_RUN:
        cause = failed_upstream(chain[-1])
        if cause is None:
            break
        chain.append(cause)
    root = chain[-1]
    path = " <- ".join(f"'{r.name}'" for r in chain)
    message = f"Task run '{run.name}' did not run because {path} {root.state.name.lower()}"
    error = UpstreamFailedError(message)
    error.__cause__ = root.state.exception
    return State(StateType.NOT_RUN, message=message, exception=error)


def describe(exception: BaseException) -> str:
    """`TypeName: message`, as task-run log lines and states show an exception."""
    return f"{type(exception).__name__}: {exception}"


def add_note(exception: BaseException, note: str) -> None:
    """Add `note` to `exception` unless it already carries it."""
    notes = getattr(exception, "__notes__", [])
    if note not in notes and hasattr(exception, "add_note"):
        exception.add_note(note)
