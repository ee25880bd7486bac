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
import inspect
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from dagrun.async_support import flow_coroutine, is_async
from dagrun.errors import ConfigError
from dagrun.parameters import ParameterValidator
from dagrun.prefect_options import reject_options
from dagrun.retry import RetryPolicy
from dagrun.run_names import RunName, check_run_name
from dagrun.state_hooks import HookLists
from dagrun.task_runners import executor_for

if TYPE_CHECKING:
    from dagrun.deployments import Deployment

P = ParamSpec("P")
R = TypeVar("R")


class Flow(HookLists, Generic[P, R]):
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
        on_running: Iterable[Callable] = (),
        flow_run_name: RunName = None,
        task_runner: Any = None,
        **unsupported: Any,
    ) -> None:
        # `@flow` over `@classmethod` / `@staticmethod`, as Prefect allows: bound in `__get__`.
        self.method_kind = type(fn) if isinstance(fn, (classmethod, staticmethod)) else None
        if self.method_kind is not None:
            fn = fn.__func__
        if not callable(fn):
            raise ConfigError(f"@flow needs a function, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        reject_options("flow", self.name, unsupported, _OPTIONS)
        check_run_name("flow_run_name", self.name, fn, flow_run_name)
        self.flow_run_name = flow_run_name
        self.task_runner = task_runner
        self.description = description if description is not None else (fn.__doc__ or "").strip() or None
        self.version = version
        self.executor = executor_for(self.name, executor, task_runner)
        self.retry_policy = RetryPolicy(retries=retries, delay=retry_delay_seconds)
        if timeout_seconds is not None and (not isinstance(timeout_seconds, (int, float)) or timeout_seconds <= 0):
            raise ConfigError(f"timeout_seconds of flow '{self.name}' must be a number > 0, got {timeout_seconds!r}")
        self.timeout_seconds = timeout_seconds
        self.validate_parameters = validate_parameters
        self.log_prints = log_prints
        self.result_storage = result_storage
        self.notify = notify
        self._set_hooks(on_completion, on_failure, on_running)  # `hook(flow, run_record, state)`
        self.parameter_validator = ParameterValidator(fn, self.name)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, return_state: bool = False, **kwargs: P.kwargs) -> R:
        from dagrun.engine import run_flow  # driver-only: see the module docstring

        if is_async(self.fn):  # as in Prefect: `asyncio.run(my_flow())`
            return flow_coroutine(run_flow, self, args, kwargs, return_state=return_state)  # type: ignore[return-value]
        return run_flow(self, args, kwargs, return_state=return_state)

    def deployment(self, **options: Any) -> Deployment:
        """Declare a deployment of this flow (name, schedules, parameters, triggers, limits),
        served by `dagrun serve FILE`; see `dagrun.deployments.make_deployment`."""
        from dagrun.deployments.declaration import make_deployment  # see the module docstring

        return make_deployment(self, **options)

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of this flow with some decorator options changed."""
        options = self._options()
        if "executor" in changes and "task_runner" not in changes:
            options["task_runner"] = None  # the new executor replaces the task runner
        if "task_runner" in changes and "executor" not in changes:
            options["executor"] = None
        return Flow(self.fn, **{**options, **changes})

    def __get__(self, instance: Any, owner: type | None = None) -> Flow[P, R]:
        """A flow that is a method, looked up on its instance (or class, for a classmethod),
        is that flow bound to it, as Python binds a function; `self` / `cls` is no parameter."""
        target = owner if self.method_kind is classmethod else instance
        if self.method_kind is staticmethod or target is None:
            return self
        return Flow(types.MethodType(self.fn, target), **self._options())

    def _options(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "version": self.version,
            "executor": None if self.task_runner is not None else self.executor,
            "task_runner": self.task_runner, "flow_run_name": self.flow_run_name,
            "retries": self.retry_policy.retries,
            "retry_delay_seconds": self.retry_policy.delay, "timeout_seconds": self.timeout_seconds,
            "validate_parameters": self.validate_parameters, "log_prints": self.log_prints,
            "result_storage": self.result_storage, "notify": self.notify,
            **self._hook_options(),
        }

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"


_OPTIONS = tuple(name for name in inspect.signature(Flow.__init__).parameters if name not in ("self", "fn", "unsupported"))


@overload
def flow(fn: Callable[P, R]) -> Flow[P, R]: ...
@overload
def flow(fn: None = None, **options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...
def flow(fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """Decorate a function as a flow: bare `@flow` or `@flow(name=..., retries=...)`."""
    if fn is None:
        return lambda function: Flow(function, **options)
    return Flow(fn, **options)
