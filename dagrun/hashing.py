"""Tagged, canonical, strict hashing of code and values, for cache keys and checksums.

Every hash is built from a tagged list (the redun model), so two kinds of hash can never
collide: `hash_struct(["TaskKey", identity, args_hash])` and `hash_struct(["Args", ...])` feed
different bytes to BLAKE2b even when the remaining elements are equal.

| function        | hashes                                    | used for                         |
|-----------------|-------------------------------------------|----------------------------------|
| `hash_struct`   | a tagged list of str/bytes/int/float/...  | combining hashes into keys       |
| `hash_value`    | an argument value (dask tokenize, strict) | literal task arguments           |
| `hash_function` | a function's code, closure and globals    | task identity                    |

Keys and structures use BLAKE2b; the checksums of serialized bytes are `dagrun.content_hashing`
(fast, not keyed); tamper-proofing is the result store's HMAC-SHA256 (`dagrun.results.envelope`).

Strictness: a value that cannot be hashed deterministically is a `ConfigError` naming it, never a
random key (a random key is a cache that silently never hits).

This module runs on workers too: it imports nothing from the engine, the history or the CLI.
"""

from __future__ import annotations

import ast
import dis
import functools
import hashlib
import inspect
import os
import site
import sys
import sysconfig
import textwrap
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from dask.base import tokenize

from dagrun.errors import ConfigError

DIGEST_SIZE = 32  # of hash_struct's BLAKE2b


# --- tagged structures -----------------------------------------------------------------------


def hash_struct(parts: list) -> str:
    """Hex BLAKE2b-256 of a tagged list, e.g. `hash_struct(["TaskKey", identity, args_hash])`.

    The encoding is canonical and injective: every element is written with a type marker and its
    length, so `["A", "bc"]`, `["A", "b", "c"]`, `["A", ["bc"]]` and `["A", 1]` vs `["A", "1"]` all
    differ. Lists and tuples are both sequences and hash alike.
    """
    if not isinstance(parts, (list, tuple)) or not parts or not isinstance(parts[0], str):
        raise TypeError("hash_struct needs a list whose first element is a string tag")
    hasher = hashlib.blake2b(digest_size=DIGEST_SIZE, person=b"dagrun-struct")
    _feed(hasher, parts)
    return hasher.hexdigest()


def _feed(hasher: Any, obj: object) -> None:
    # bool before int: True is an int, but must not hash like 1.
    if obj is None:
        hasher.update(b"N")
    elif obj is True or obj is False:
        hasher.update(b"T" if obj else b"F")
    elif isinstance(obj, int):
        data = str(int(obj)).encode()
        hasher.update(b"i%d:%s" % (len(data), data))
    elif isinstance(obj, float):
        data = float(obj).hex().encode()  # exact, and -0.0 differs from 0.0
        hasher.update(b"f%d:%s" % (len(data), data))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        hasher.update(b"s%d:" % len(data))
        hasher.update(data)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        view = memoryview(obj)
        hasher.update(b"b%d:" % view.nbytes)
        hasher.update(view)
    elif isinstance(obj, (list, tuple)):
        hasher.update(b"l%d:" % len(obj))
        for item in obj:
            _feed(hasher, item)
    else:
        raise TypeError(
            f"hash_struct cannot hash a {type(obj).__qualname__}; hash it with hash_value first"
        )


# --- argument values -------------------------------------------------------------------------


def hash_value(value: Any, *, what: str) -> str:
    """Deterministic hash of an argument value, via `dask.base.tokenize` in strict mode.

    `what` names the value for the error message, e.g. "argument 'data' of task 'extract'".
    Functions are hashed by `hash_function` (their code), not by reference.
    """
    if isinstance(value, types.FunctionType):
        return hash_struct(["Value", "function", hash_function(value)])
    try:
        token = tokenize(value, ensure_deterministic=True)
    except Exception as exc:  # TokenizationError, or whatever a __dask_tokenize__ raises
        raise ConfigError(
            f"Cannot hash {what} deterministically (a {type(value).__qualname__}: {exc}). "
            "Make the value hashable (plain data, a dataclass, or give its class a "
            "__dask_tokenize__ method returning a stable value), or pass cache_key_fn= to the "
            "task to compute the cache key yourself."
        ) from exc
    return hash_struct(["Value", "token", token])


# --- functions -------------------------------------------------------------------------------

# A memo, not a registry: function object -> (hash, whether its reference graph had a cycle).
# Closure and global values may differ between processes but are taken as fixed within one, so
# the hash of a given function object is computed once per process.
_FUNCTION_HASHES: weakref.WeakKeyDictionary[Callable, tuple[str, bool]] = (
    weakref.WeakKeyDictionary()
)
_FUNCTION_HASHES_LOCK = threading.Lock()


def hash_function(fn: Callable) -> str:
    """Identity of a function for cache keys.

    Hashed: module, qualified name, source (decorators stripped and formatting normalized, so
    `@task(retries=3)` -> `retries=4` or a comment does not change it) and the code object, the
    default arguments, the values of closure cells and of the module globals the code reads,
    recursively through nested code. Referenced functions are hashed the same way (cycles are
    cut with a marker); modules by name; classes by qualified name and source; functions and
    classes of installed libraries (site-packages, stdlib, dagrun itself) by name and the
    library's `__version__`, so a task calling `numpy.mean` is not keyed on numpy's internals.
    An unhashable closure value or global is a `ConfigError` naming the function and the name.
    """
    return _FunctionHasher().hash_callable(fn)


class _FunctionHasher:
    """One top-level `hash_function` call: the stack of functions being hashed, to cut cycles.

    A function whose reference graph has a cycle hashes differently depending on where the walk
    entered the cycle, so only its top-level hash is memoized and used at top level; acyclic
    hashes are context-free and reused everywhere. This keeps hashes independent of call order,
    hence equal across processes.
    """

    def __init__(self) -> None:
        self.stack: list[types.FunctionType] = []

    def hash_callable(self, fn: Callable) -> str:
        if isinstance(fn, types.FunctionType):
            with _FUNCTION_HASHES_LOCK:
                cached = _FUNCTION_HASHES.get(fn)
            if cached is not None:
                return cached[0]
            digest, cyclic = self.function(fn)
            with _FUNCTION_HASHES_LOCK:
                _FUNCTION_HASHES[fn] = (digest, cyclic)
            return digest
        if isinstance(fn, functools.partial):
            what = f"an argument bound by functools.partial({_qualname(fn.func)})"
            return hash_struct(
                ["Partial", self.hash_callable(fn.func), hash_value(fn.args, what=what),
                 hash_value(fn.keywords, what=what)]
            )
        if isinstance(fn, types.MethodType):
            what = f"the object bound to method {_qualname(fn)}"
            bound = hash_value(fn.__self__, what=what)
            return hash_struct(["Method", self.hash_callable(fn.__func__), bound])
        if isinstance(fn, type):
            return hash_struct(_class_identity(fn))
        if isinstance(fn, types.BuiltinFunctionType):
            return hash_struct(["Builtin", getattr(fn, "__module__", None) or "", _qualname(fn)])
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None and callable(wrapped):
            return hash_struct(["Wrapped", self.hash_callable(wrapped)])
        if callable(fn):
            what = f"the callable object {_qualname(type(fn))}"
            return hash_struct(["Callable", _class_identity(type(fn)), hash_value(fn, what=what)])
        raise TypeError(f"hash_function needs a callable, got a {type(fn).__qualname__}")

    def function(self, fn: types.FunctionType) -> tuple[str, bool]:
        """(hash, cyclic) of a plain function; cyclic means a cycle marker was emitted below."""
        if _is_library(fn.__module__):
            return hash_struct(_library_identity("LibraryFunction", fn)), False
        with _FUNCTION_HASHES_LOCK:
            cached = _FUNCTION_HASHES.get(fn)
        if cached is not None and not cached[1]:
            return cached[0], False
        if any(active is fn for active in self.stack):
            return hash_struct(["Recursive", _module_label(fn.__module__), fn.__qualname__]), True
        self.stack.append(fn)
        try:
            cyclic = False
            name = _qualname(fn)
            closure: list = ["Closure"]
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell: a name bound later in the outer function
                    closure.append([var, "EmptyCell"])
                    continue
                part, below = self.reference(
                    value, f"closure variable '{var}' of function '{name}'"
                )
                closure.append([var, part])
                cyclic |= below
            global_parts: list = ["Globals"]
            for var in sorted(_global_names(fn.__code__)):
                if var not in fn.__globals__:
                    continue  # a builtin, or a global not defined (yet): the call would fail
                part, below = self.reference(
                    fn.__globals__[var], f"global '{var}' referenced by function '{name}'"
                )
                global_parts.append([var, part])
                cyclic |= below
            defaults = hash_value(
                (fn.__defaults__, fn.__kwdefaults__), what=f"default arguments of function '{name}'"
            )
            digest = hash_struct(
                ["Function", _module_label(fn.__module__), fn.__qualname__, _code_identity(fn),
                 closure, global_parts, defaults]
            )
        finally:
            self.stack.pop()
        if not cyclic:
            with _FUNCTION_HASHES_LOCK:
                _FUNCTION_HASHES[fn] = (digest, False)
        return digest, cyclic

    def reference(self, value: Any, what: str) -> tuple[list, bool]:
        """The hashable part for a value a function reads through its closure or globals."""
        if isinstance(value, types.FunctionType):
            digest, cyclic = self.function(value)
            return ["Function", digest], cyclic
        if isinstance(value, types.ModuleType):
            return ["Module", value.__name__], False
        if isinstance(value, type):
            return _class_identity(value), False
        if isinstance(value, types.BuiltinFunctionType):
            return ["Builtin", getattr(value, "__module__", None) or "", _qualname(value)], False
        wrapped = getattr(value, "__wrapped__", None)
        if isinstance(wrapped, types.FunctionType):
            # A decorated function (e.g. another task): its identity is the function it wraps.
            digest, cyclic = self.function(wrapped)
            return ["Wrapped", digest], cyclic
        try:
            return ["Value", hash_value(value, what=what)], False
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} The function's cache key depends on it; alternatively pin the task's "
                "identity with version=."
            ) from exc.__cause__


def _module_label(module: str | None) -> str:
    """A module name for identities; a user's script has the same one however it was run
    (`python flow.py` makes it `__main__`, `dagrun run flow.py` imports it as `dagrun_user_flow`)."""
    if module in ("__main__", "__mp_main__") or (module or "").startswith("dagrun_user_"):
        return "<script>"
    return module or ""


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{name}" if module else name


_GLOBAL_OPCODES = frozenset(
    {"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"}
)


def _global_names(code: types.CodeType) -> set[str]:
    """Names the code (and code nested in it) reads or writes as globals."""
    names: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in _GLOBAL_OPCODES:
            names.add(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _code_identity(fn: types.FunctionType) -> list:
    """Normalized source (decorators stripped) plus the code object's structure.

    The code object is hashed too because `inspect.getsource` reads the file on disk, which may
    have been edited since the function was imported; the bytecode is what actually runs.
    """
    try:
        source: str | None = _normalized_source(inspect.getsource(fn), fn.__name__)
    except (OSError, TypeError, SyntaxError, IndexError):  # IndexError: inspect on odd code
        source = None  # defined in exec() or a REPL without history: the code object decides
    return ["Code", source, _code_struct(fn.__code__)]


def _normalized_source(source: str, name: str) -> str:
    tree = ast.parse(textwrap.dedent(source))
    node = tree.body[0] if tree.body else None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
        node.decorator_list = []  # execution options (retries, tags) must not change the key
        return ast.unparse(node)
    return source  # a lambda: getsource gives the whole statement; keep it verbatim


def _code_struct(code: types.CodeType) -> list:
    # Line numbers are left out on purpose: moving a function must not invalidate its cache.
    return [
        "CodeObject", code.co_code, list(code.co_names), list(code.co_varnames),
        list(code.co_freevars), list(code.co_cellvars), code.co_argcount,
        code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags,
        [_const_struct(const) for const in code.co_consts],
    ]


def _const_struct(const: object) -> object:
    if isinstance(const, types.CodeType):
        return _code_struct(const)
    if const is None or isinstance(const, (bool, int, float, str, bytes)):
        return const
    if isinstance(const, tuple):
        return ["tuple", [_const_struct(item) for item in const]]
    if isinstance(const, frozenset):
        # Iteration order of a frozenset of strings depends on PYTHONHASHSEED: sort it.
        return ["frozenset", sorted(repr(item) for item in const)]
    return ["repr", repr(const)]


def _class_identity(cls: type) -> list:
    if _is_library(cls.__module__):
        return _library_identity("LibraryClass", cls)
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError, IndexError):
        source = ""  # defined in exec() or a REPL: the qualified name is all there is
    return ["Class", _module_label(cls.__module__), cls.__qualname__, source]


def _library_identity(tag: str, obj: Any) -> list:
    module = getattr(obj, "__module__", None) or ""
    top = sys.modules.get(module.partition(".")[0])
    return [tag, module, getattr(obj, "__qualname__", ""), str(getattr(top, "__version__", ""))]


def _is_library(module_name: str | None) -> bool:
    """True for stdlib, installed packages and dagrun itself: code the user does not edit."""
    if not module_name or module_name in {"__main__", "__mp_main__"}:
        return False
    top = module_name.partition(".")[0]
    if top == "dagrun" or top in sys.stdlib_module_names:
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return False  # unknown or namespace module: hash it fully rather than guess
    return os.path.realpath(path).startswith(_library_dirs())


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs)
