"""Importing a cluster class, and checks on it and its `cluster.kwargs` before dagrun calls
anything.

`cluster.class` in a config is a dotted path to anything importable, so dagrun refuses what is
not a Dask cluster class (`os.system` would otherwise run a command) after importing it and
before calling it. The kwargs are checked against the types the class states for its
arguments, in annotations or in its numpydoc `Parameters` section (LocalCluster documents
`n_workers: int` but does not annotate it), so `n_workers: two` is one line naming the file
and key instead of a TypeError from deep inside the cluster. A value is refused only when
every stated type rejects it; arguments without a readable type are left to the class, whose
TypeError or ValueError at construction `construction_error` turns into one line.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import distributed
from distributed.deploy import Cluster

from dagrun.errors import ConfigError

# The dagrun extra that installs each optional top-level module a cluster class needs.
_EXTRAS_BY_MODULE: Mapping[str, str] = MappingProxyType(
    {"dask_kubernetes": "kubernetes", "dask_jobqueue": "slurm", "asyncssh": "ssh"}
)

_NONE = "None"


def extra_for_module(module_name: str) -> str | None:
    """The dagrun extra (`pip install "dagrun[<extra>]"`) that provides `module_name`, if any."""
    return _EXTRAS_BY_MODULE.get(module_name.partition(".")[0])


def import_cluster_class(path: str, *, source: str) -> Callable[..., Any]:
    """Import the cluster class at dotted `path`; a missing optional package names its extra."""
    module_name, _, attribute = path.strip().rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(
            f"{source}: cluster class {path!r} is not a dotted path such as "
            "'distributed.LocalCluster'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        raise ConfigError(_missing_module_message(path, missing, source)) from error
    except ImportError as error:
        raise ConfigError(f"{source}: cannot import cluster class {path!r}: {error}") from error
    cluster_class = getattr(module, attribute, None)
    if not callable(cluster_class):
        raise ConfigError(f"{source}: module '{module_name}' has no cluster class '{attribute}'")
    # SSHCluster imports asyncssh only once it starts; check now, before anything starts.
    if attribute == "SSHCluster" and module_name.partition(".")[0] == "distributed":
        try:
            importlib.import_module("asyncssh")
        except ImportError as error:
            raise ConfigError(_missing_module_message(path, "asyncssh", source)) from error
    return cluster_class


def _missing_module_message(path: str, missing: str, source: str) -> str:
    extra = extra_for_module(missing) or extra_for_module(path)
    if extra is None:
        return (
            f"{source}: cannot import cluster class {path!r}: no module named '{missing}'; "
            "check the spelling, or install the package that provides it"
        )
    return (
        f"{source}: cluster class {path!r} needs '{missing}', which is not installed; install it "
        f'with: pip install "dagrun[{extra}]" (from a dagrun checkout: '
        f'pip install -e ".[{extra}]")'
    )


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_INTEGER = ("an integer", lambda value: isinstance(value, int) and not isinstance(value, bool))
_NUMBER = ("a number", _is_number)
_STRING = ("a string", lambda value: isinstance(value, str))
_BOOLEAN = ("true or false", lambda value: isinstance(value, bool))
_MAPPING = ("a mapping", lambda value: isinstance(value, Mapping))
_LIST = ("a list", _is_list)
_NULL = (_NONE, lambda value: value is None)
# What each type word in an annotation or docstring admits, and how a message says it.
_TYPE_WORDS: Mapping[str, tuple[str, Any]] = {
    "int": _INTEGER, "integer": _INTEGER, "float": _NUMBER, "number": _NUMBER,
    "str": _STRING, "string": _STRING, "bool": _BOOLEAN, "boolean": _BOOLEAN,
    "dict": _MAPPING, "mapping": _MAPPING, "list": _LIST, "sequence": _LIST, "tuple": _LIST,
    "none": _NULL, "optional": _NULL,
}
_WRAPPER = re.compile(r"(?:typing\.)?(?:optional|union)\[(.*)\]", re.IGNORECASE)


# Dask's cluster factories that are functions, not classes: each returns a Cluster.
_CLUSTER_FACTORIES = frozenset({distributed.SSHCluster})


def require_cluster_class(candidate: Any, *, name: str, source: str) -> type[Cluster]:
    """`candidate` if it is a Dask cluster class (or one of Dask's own cluster factories, such
    as `distributed.SSHCluster`); otherwise a ConfigError, before it is called."""
    if (isinstance(candidate, type) and issubclass(candidate, Cluster)) or candidate in _CLUSTER_FACTORIES:
        return candidate
    raise ConfigError(
        f"{source}: cluster.class {name!r} is not a Dask cluster class (a subclass of "
        "distributed.deploy.Cluster, such as distributed.LocalCluster, distributed.SSHCluster, "
        "dask_jobqueue.SLURMCluster or dask_kubernetes.operator.KubeCluster); it was not called"
    )


def check_cluster_kwargs(cluster_class: type, kwargs: Mapping[str, Any], *, source: str) -> None:
    """Refuse a kwarg `cluster_class` does not take, or whose value no stated type admits."""
    class_name = cluster_class.__qualname__
    parameters = _parameters(cluster_class)
    open_ended = parameters is None or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    documented = _documented_types(cluster_class)
    for key, value in kwargs.items():
        if not open_ended and parameters is not None and key not in parameters:
            taken = ", ".join(name for name, p in parameters.items() if p.kind is not p.VAR_POSITIONAL)
            raise ConfigError(
                f"{source}: cluster.kwargs.{key}: {class_name} takes no argument {key!r} "
                f"(it takes: {taken})"
            )
        if value is None:
            continue  # None asks for the class's default
        annotation = parameters[key].annotation if parameters and key in parameters else inspect.Parameter.empty
        stated = [
            words
            for words in (_annotation_types(annotation), _type_words(documented.get(key, "")))
            if words
        ]
        if stated and not any(_TYPE_WORDS[word][1](value) for words in stated for word in words):
            expected = " or ".join(dict.fromkeys(
                _TYPE_WORDS[word][0] for words in stated for word in words if _TYPE_WORDS[word][0] != _NONE
            ))
            hint = " (quote it in YAML)" if "a string" in expected else ""
            raise ConfigError(
                f"{source}: cluster.kwargs.{key} must be {expected} for {class_name}, got "
                f"{type(value).__name__} {value!r}{hint}"
            )


def construction_error(cluster_class: type, kwargs: Mapping[str, Any], error: Exception, *, source: str) -> ConfigError:
    """One line for a TypeError or ValueError a cluster class raised on its kwargs, naming the
    key whose value the error quotes (numbers are too common in messages to be told apart)."""
    message = f"{type(error).__name__}: {error}"
    quoted = [
        key for key, value in kwargs.items()
        if not isinstance(value, (int, float, type(None))) and repr(value) in message
    ]
    if len(quoted) == 1:
        key = quoted[0]
        return ConfigError(
            f"{source}: cluster.kwargs.{key}: {cluster_class.__qualname__} refused "
            f"{kwargs[key]!r}: {message}"
        )
    keys = ", ".join(f"cluster.kwargs.{key}" for key in kwargs) or "cluster.kwargs"
    return ConfigError(f"{source}: {cluster_class.__qualname__} refused its arguments ({keys}): {message}")


def _parameters(cluster_class: type) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(cluster_class).parameters
    except (TypeError, ValueError):  # no introspectable signature
        return None


def _annotation_types(annotation: Any) -> list[str] | None:
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return _type_words(text)


def _type_words(text: str) -> list[str] | None:
    """The type words of `str, float, int, or None, default "auto"`, `Optional[List[str]]` or
    `bool (False by default)`; None when any part is not a plain type word."""
    text = re.sub(r"\([^)]*\)", "", text).strip()
    words: list[str] = []
    for part in _top_level_parts(text):
        part = re.sub(r"^or\s+", "", part.strip(), flags=re.IGNORECASE)
        if not part or part.lower().startswith("default"):
            continue
        if wrapped := _WRAPPER.fullmatch(part):
            inner = _type_words(wrapped.group(1))
            if inner is None:
                return None
            words += [*inner, "none"]
            continue
        word = part.partition("[")[0].strip().lower().removeprefix("typing.")
        if word not in _TYPE_WORDS:
            return None
        words.append(word)
    return words or None


def _top_level_parts(text: str) -> list[str]:
    """`text` split on `,`, `|` and ` or ` outside brackets."""
    parts, depth, current = [], 0, ""
    for character in re.sub(r"\s+or\s+", "|", text):
        depth += {"[": 1, "]": -1}.get(character, 0)
        if character in ",|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += character
    return [*parts, current]


def _documented_types(cluster_class: type) -> dict[str, str]:
    """`name -> type text` from the numpydoc `Parameters` section of the class's docstring."""
    lines = inspect.getdoc(cluster_class) or ""
    section = re.search(r"^Parameters\n-+\n(.*?)(?:\n\S[^\n]*\n-+\n|\Z)", lines, re.DOTALL | re.MULTILINE)
    if section is None:
        return {}
    found: dict[str, str] = {}
    for match in re.finditer(r"^(\w+)\s*:\s*(.+)$", section.group(1), re.MULTILINE):
        found.setdefault(match.group(1), match.group(2))
    return found
