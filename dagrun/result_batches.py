"""Results fetched in batches: one round trip serves many `.result()` calls.

Flows collect results one by one (`[f.result() for f in futures]`); a round trip per result
would cost several times Dask's single `gather`. So when flow code asks for one completed
run's value, this module also fetches what it will likely ask for next.

Policy
- Candidates are the runs after the asked-for one in submission order (the order flows
  iterate in), then those before it, nearest first, at most `SCAN_RUNS` each way: runs whose
  `TaskFuture` the flow still holds, whose value was not handed over yet, and whose value is
  ready: a finished executor handle, or a cache hit not loaded anywhere yet.
- Finished handles come in one executor round trip (`ExecutorSession.fetch_batch`), sized by
  what the executor knows (Dask's `nbytes`). Cache hits are read from the result store by the
  driver, each checked as every read is (checksum, signature), sized by their entry headers:
  the flow asked for the value, so the bytes come to the driver either way, and this spares a
  Dask task and a round trip per hit.
- A batch holds at most `BATCH_BYTES` (the asked-for value always comes, whatever its size),
  and values fetched ahead and not yet asked for stay under `KEPT_BYTES`. A value fetched
  ahead is handed over once (then dropped) and released when its future is garbage-collected
  (a weak reference), so memory stays bounded.
- Best effort: a value that could not be fetched ahead (a lost key, an unusable entry) is
  fetched by its own `.result()` the usual way, so an error is raised at its own future,
  never at a neighbour's.

State kept: the values fetched ahead (run id -> value, size, the handle it came from, the
future's weak reference), the entry size of each cache hit not read yet, and the ids of runs
whose value was handed over (not fetched ahead again).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dagrun.errors import ResultStoreError
from dagrun.executors.base import FINISHED, ExecutorSession
from dagrun.results import CacheMiss, ResultStore
from dagrun.states import StateType

if TYPE_CHECKING:
    from dagrun.task_runs import TaskRun

BATCH_BYTES = 4 * 1024 * 1024
KEPT_BYTES = 16 * 1024 * 1024
SCAN_RUNS = 4096

MISSING = object()
"""What `take` returns when no value was fetched ahead for the run."""


class ResultBatches:
    """The values one flow run's tracker fetched ahead of the `.result()` calls asking for them."""

    def __init__(self, session: ExecutorSession, store: Callable[[], ResultStore]) -> None:
        self._session = session
        self._store = store  # the cache planner's store; only called once a hit exists
        self._kept: dict[str, tuple[Any, int, Any, weakref.ref]] = {}
        self._kept_bytes = 0
        self._hit_sizes: dict[str, int] = {}  # run id -> entry size, for hits not read yet
        self._handed: set[str] = set()  # runs whose value a `.result()` already received
        self._cursor = 0  # where the last asked-for run was in the runs list

    def hit(self, run: TaskRun, size: int) -> None:
        """Note a cache hit and its entry size (from the header the planner read)."""
        self._hit_sizes[run.id] = size

    def value(self, run: TaskRun, runs: Sequence[TaskRun]) -> Any:
        """The value of completed `run`, fetched with a batch of others; MISSING if it
        could not be (the caller fetches it the usual way, raising what that raises)."""
        value = self.take(run)
        if value is not MISSING:
            return value
        self._handed.add(run.id)
        if run.handle is not None:
            if self._session.status(run.handle) != FINISHED:
                return MISSING
            return self._fetch_handles(run, self._candidates(run, runs, self._ready_handle))
        if run.state.type is StateType.CACHED and run.cache_key is not None:
            return self._read_hits(run, self._candidates(run, runs, self._unread_hit))
        return MISSING

    def take(self, run: TaskRun) -> Any:
        """The value fetched ahead for `run` (handed over once), or MISSING."""
        entry = self._kept.pop(run.id, None)
        if entry is None:
            return MISSING
        self._handed.add(run.id)
        value, size, handle, _ = entry
        self._kept_bytes -= size
        if handle is not None and handle is not run.handle:
            return MISSING  # submitted again since (e.g. after the scheduler was lost)
        return value

    def held(self) -> tuple[int, int]:
        """(values, bytes) fetched ahead and not asked for yet: what this holds in memory."""
        return len(self._kept), self._kept_bytes

    def read_hits(self, runs: Sequence[TaskRun]) -> dict[str, Any]:
        """run id -> value of the hits among `runs` not loaded anywhere, read from the store
        (all of them: the caller needs them all); unusable entries are left out."""
        values = {}
        for run in runs:
            if run.handle is None and run.state.type is StateType.CACHED and run.cache_key is not None:
                value = self._read(run)
                if value is not MISSING:
                    values[run.id] = value
        return values

    # ---------------------------------------------------------------- internals
    def _candidates(self, run: TaskRun, runs: Sequence[TaskRun], ready: Callable[[TaskRun], bool]) -> list[TaskRun]:
        if not self._budget():
            return []
        position = self._position(run, runs)
        self._cursor = position
        after = runs[position + 1 : position + 1 + SCAN_RUNS]
        before = runs[max(0, position - SCAN_RUNS) : position][::-1]
        return [
            other for other in (*after, *before)
            if other.id not in self._kept and other.id not in self._handed
            and other.future_ref() is not None and ready(other)
        ]

    def _ready_handle(self, run: TaskRun) -> bool:
        return run.handle is not None and self._session.status(run.handle) == FINISHED

    def _unread_hit(self, run: TaskRun) -> bool:
        return run.handle is None and run.state.type is StateType.CACHED and run.id in self._hit_sizes

    def _position(self, run: TaskRun, runs: Sequence[TaskRun]) -> int:
        try:
            return runs.index(run, self._cursor)  # flows mostly ask in submission order
        except ValueError:
            return runs.index(run)

    def _budget(self) -> int:
        return max(0, min(BATCH_BYTES, KEPT_BYTES - self._kept_bytes))

    def _fetch_handles(self, run: TaskRun, others: list[TaskRun]) -> Any:
        batch = [run, *others]
        fetched = self._session.fetch_batch([member.handle for member in batch], self._budget())
        for position, (value, size) in fetched.items():
            if position:
                self._keep(batch[position], value, size, batch[position].handle)
        return fetched[0][0] if 0 in fetched else MISSING

    def _read_hits(self, run: TaskRun, others: list[TaskRun]) -> Any:
        value = self._read(run)
        budget, total = self._budget(), 0
        for other in others:
            size = self._hit_sizes[other.id]
            if total + size > budget:
                continue
            other_value = self._read(other)
            if other_value is not MISSING:
                total += size
                self._keep(other, other_value, size, None)
        return value

    def _read(self, run: TaskRun) -> Any:
        """A hit's value from the store, verified; MISSING if the entry is no longer usable
        (the usual path then loads it on a worker, fails, and recomputes the run)."""
        try:
            value = self._store().get(run.cache_key)
        except (CacheMiss, ResultStoreError):
            return MISSING
        self._hit_sizes.pop(run.id, None)
        return value

    def _keep(self, run: TaskRun, value: Any, size: int, handle: Any) -> None:
        future = run.future_ref()
        if future is None:
            return
        ref = weakref.ref(future, lambda _, run_id=run.id: self._drop(run_id))
        self._kept[run.id] = (value, size, handle, ref)
        self._kept_bytes += size

    def _drop(self, run_id: str) -> None:
        """Its future is gone: nobody can ask for the value any more."""
        entry = self._kept.pop(run_id, None)
        if entry is not None:
            self._kept_bytes -= entry[1]
