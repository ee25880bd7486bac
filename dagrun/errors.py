"""Every exception dagrun raises on its own behalf.

User code's exceptions pass through unchanged (same type, same message); these are for the
cases where dagrun itself has something to say.

    DagrunError
    ├── ConfigError                 a setting, env var or config file is wrong (ValueError)
    ├── ParameterValidationError    a flow parameter does not match its type hint (ValueError)
    ├── FailedStateError            a flow or task returned a Failed state (no exception of its own)
    ├── TaskTimeoutError            a task attempt ran past timeout_seconds (TimeoutError)
    ├── FlowTimeoutError            a flow run ran past timeout_seconds (TimeoutError)
    ├── UpstreamFailedError         a task did not run because an upstream task failed
    ├── CrashedError                the infrastructure failed (worker died, scheduler lost)
    ├── CancelledRunError           the run was cancelled (Ctrl-C, `dagrun runs cancel`)
    ├── TaskExitError               a task raised SystemExit or KeyboardInterrupt on a worker
    ├── HistoryDamagedError         the run-history database is damaged (exit 2)
    └── ResultStoreError            the result store could not write or read an entry
        ├── IntegrityError          an entry failed its checksum or signature
        └── SerializationError      a value could not be serialized (TypeError)

    CancelRequested (a BaseException, like KeyboardInterrupt)
                                    raised in a flow body once its run is asked to stop

Each `DagrunError` carries `exit_code`, which the CLI uses for its process exit status.
"""

from __future__ import annotations


class DagrunError(Exception):
    """Base of every exception raised by dagrun itself."""

    exit_code = 1


class ConfigError(DagrunError, ValueError):
    """A setting, environment variable or config file is invalid; the message says which."""

    exit_code = 2


class ParameterValidationError(DagrunError, ValueError):
    """A flow parameter failed validation against the flow's type hints."""

    exit_code = 2


class FailedStateError(DagrunError):
    """A flow or task chose to fail by returning `Failed(message=...)` (as in Prefect); the
    message is the state's."""


class TaskTimeoutError(DagrunError, TimeoutError):
    """A task attempt exceeded the task's `timeout_seconds`."""


class FlowTimeoutError(DagrunError, TimeoutError):
    """A flow run exceeded the flow's `timeout_seconds`."""


class UpstreamFailedError(DagrunError):
    """Raised by `.result()` of a task that was not run because an upstream task failed."""


class CrashedError(DagrunError):
    """The infrastructure failed under a task or flow: a worker died or the scheduler was lost."""


class CancelledRunError(DagrunError):
    """The run was cancelled before it finished."""

    exit_code = 130


class CancelRequested(BaseException):
    """The run was asked to stop (`dagrun runs cancel`, SIGTERM): raised in the flow body at
    its next task call or wait. Not an `Exception`, so a flow's `except Exception` does not
    swallow it; the engine cancels the run's tasks and records `Cancelled`."""


class TaskExitError(DagrunError):
    """A task raised `SystemExit` or `KeyboardInterrupt` on a Dask worker; the message is the
    original ("SystemExit: 3"). Dask lets those two end the worker's process (losing every
    result held there), so the task wrapper turns them into this ordinary failure instead."""


class HistoryDamagedError(DagrunError):
    """The run-history database is damaged (or not a database); the message says what to do."""

    exit_code = 2


class ResultStoreError(DagrunError):
    """The result store could not write or read an entry."""


class IntegrityError(ResultStoreError):
    """A stored entry failed its checksum or signature and was not deserialized."""


class SerializationError(ResultStoreError, TypeError):
    """A value could not be serialized with the chosen serializer."""
