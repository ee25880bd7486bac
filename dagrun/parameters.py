"""Flow parameters: bound to the signature, then validated and coerced from type hints.

Validation happens before any task runs, so a bad parameter never costs a task. Pydantic is
imported only for flows whose parameters carry type hints, to keep start-up fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dagrun.errors import ParameterValidationError
from dagrun.parameter_types import expected_type_at, type_name
from dagrun.secrets import is_secret_type, mask, remember_parameters


def bind_parameters(fn: Callable, flow_name: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Map call arguments to parameter names (defaults applied); errors name the flow."""
    signature = inspect.signature(fn)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ParameterValidationError(f"Flow '{flow_name}': {exc}") from None
    bound.apply_defaults()
    remember_parameters(bound.arguments)  # a SecretStr passed as is, validated or not
    return dict(bound.arguments)


class ParameterValidator:
    """Validates a flow's parameters against its type hints (a pydantic model built once)."""

    def __init__(self, fn: Callable, flow_name: str) -> None:
        self.flow_name = flow_name
        try:  # resolve string annotations (`from __future__ import annotations`)
            self.signature = inspect.signature(fn, eval_str=True)
        except Exception:  # noqa: BLE001 - an unresolvable hint is validated as written
            self.signature = inspect.signature(fn)
        self._model: Any = None
        self._hinted = {
            name
            for name, parameter in self.signature.parameters.items()
            if parameter.annotation is not inspect.Parameter.empty
            and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        }

    def validate(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if not self._hinted:
            return parameters
        import pydantic

        if self._model is None:
            self._model = self._build_model(pydantic)
        values = {name: parameters[name] for name in self._hinted if name in parameters}
        try:
            model = self._model.model_validate(values)
        except pydantic.ValidationError as exc:
            raise ParameterValidationError(self._describe(exc)) from None
        validated = {name: getattr(model, name) for name in values}
        remember_parameters(validated)  # a text coerced to a SecretStr is a secret from now on
        return {**parameters, **validated}

    def _build_model(self, pydantic: Any) -> Any:
        fields = {}
        for name in self._hinted:
            parameter = self.signature.parameters[name]
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (parameter.annotation, default)
        return pydantic.create_model(
            f"{self.flow_name}_parameters",
            __config__=pydantic.ConfigDict(arbitrary_types_allowed=True),
            **fields,
        )

    def _describe(self, error: Any) -> str:
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"])
            declared = self.signature.parameters[str(item["loc"][0])].annotation
            expected = expected_type_at(declared, item["loc"][1:])  # a nested field's own type
            # The input of a secret parameter is never echoed, nor a known secret value elsewhere.
            hidden = is_secret_type(declared) or is_secret_type(expected)
            got = "a value (hidden: secret parameter)" if hidden else mask(repr(item.get("input")))
            wanted = f" expected {type_name(expected)}," if expected is not None else ""
            problems.append(f"parameter '{name}'{wanted} got {got} ({mask(item['msg'])})")
        return f"Invalid parameters for flow '{self.flow_name}': " + "; ".join(problems)

