"""`@flow`: a function whose body is run in the driver, with its task calls run on Dask.

Calling a flow starts a flow run (see `dagrun.engine`); calling one inside another flow
starts a subflow run that shares the parent's executor.

Decorating imports neither the engine nor the deployments: a worker imports the user's module
that holds both `@flow` and `@task` functions when it unpickles a task defined there, and it
must not load the driver for it. The engine loads at the first call of a flow, a deployment's
declaration at the first `.deployment(...)` (neither imports this module: no cycle).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from dagrun.errors import ConfigError
from dagrun.parameters import ParameterValidator
from dagrun.retry import RetryPolicy

if TYPE_CHECKING:
    from dagrun.deployments import Deployment

P = ParamSpec("P")
R = TypeVar("R")


class Flow(Generic[P, R]):
    """A function decorated with `@flow`; `flow.fn` is the undecorated function."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        executor: Any = None,
        retries: int = 0,
        retry_delay_seconds: Any = 0,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        log_prints: bool = False,
        result_storage: str | None = None,
        notify: Any = None,
        on_completion: Iterable[Callable] = (),
        on_failure: Iterable[Callable] = (),
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"@flow needs a function, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.description = description if description is not None else (fn.__doc__ or "").strip() or None
        self.version = version
        self.executor = executor
        self.retry_policy = RetryPolicy(retries=retries, delay=retry_delay_seconds)
        if timeout_seconds is not None and (not isinstance(timeout_seconds, (int, float)) or timeout_seconds <= 0):
            raise ConfigError(f"timeout_seconds of flow '{self.name}' must be a number > 0, got {timeout_seconds!r}")
        self.timeout_seconds = timeout_seconds
        self.validate_parameters = validate_parameters
        self.log_prints = log_prints
        self.result_storage = result_storage
        self.notify = notify
        self.on_completion = tuple(on_completion)
        self.on_failure = tuple(on_failure)
        self.parameter_validator = ParameterValidator(fn, self.name)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, return_state: bool = False, **kwargs: P.kwargs) -> R:
        from dagrun.engine import run_flow  # driver-only: see the module docstring

        return run_flow(self, args, kwargs, return_state=return_state)

    def deployment(self, **options: Any) -> Deployment:
        """Declare a deployment of this flow (name, schedules, parameters, triggers, limits),
        served by `dagrun serve FILE`; see `dagrun.deployments.make_deployment`."""
        from dagrun.deployments.declaration import make_deployment  # see the module docstring

        return make_deployment(self, **options)

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of this flow with some decorator options changed."""
        options = {
            "name": self.name, "description": self.description, "version": self.version,
            "executor": self.executor, "retries": self.retry_policy.retries,
            "retry_delay_seconds": self.retry_policy.delay, "timeout_seconds": self.timeout_seconds,
            "validate_parameters": self.validate_parameters, "log_prints": self.log_prints,
            "result_storage": self.result_storage, "notify": self.notify,
            "on_completion": self.on_completion, "on_failure": self.on_failure,
        }
        return Flow(self.fn, **{**options, **changes})

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"


@overload
def flow(fn: Callable[P, R]) -> Flow[P, R]: ...
@overload
def flow(fn: None = None, **options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...
def flow(fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """Decorate a function as a flow: bare `@flow` or `@flow(name=..., retries=...)`."""
    if fn is None:
        return lambda function: Flow(function, **options)
    return Flow(fn, **options)
