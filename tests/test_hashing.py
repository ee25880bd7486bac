"""Behaviour of dagrun.hashing: tagged structures, strict value hashing, code identity, checksums.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import xxhash

from dagrun.errors import ConfigError
from dagrun.content_hashing import ContentHasher, content_hash
from dagrun.hashing import hash_function, hash_struct, hash_value

# --- hash_struct -----------------------------------------------------------------------------


def test_different_tags_never_collide() -> None:
    assert hash_struct(["TaskKey", "abc", "def"]) != hash_struct(["ArgsKey", "abc", "def"])
    assert hash_struct(["A", "bc"]) != hash_struct(["Ab", "c"])


@pytest.mark.parametrize(
    "left, right",
    [
        (["A", "bc"], ["A", "b", "c"]),
        (["A", ["b"]], ["A", "b"]),
        (["A", 1], ["A", "1"]),
        (["A", 1], ["A", 1.0]),
        (["A", 1], ["A", True]),
        (["A", 0.0], ["A", -0.0]),
        (["A", None], ["A", "None"]),
        (["A", b"x"], ["A", "x"]),
        (["A", [], []], ["A", [[]]]),
    ],
)
def test_encoding_is_injective(left: list, right: list) -> None:
    assert hash_struct(left) != hash_struct(right)


def test_hash_struct_is_stable_and_treats_tuples_as_lists() -> None:
    digest = hash_struct(["TaskKey", "identity", ("x", 1, 2.5, None, b"\x00", [True])])
    assert digest == hash_struct(["TaskKey", "identity", ["x", 1, 2.5, None, b"\x00", [True]]])
    assert len(digest) == 64 and int(digest, 16) >= 0


@pytest.mark.parametrize("parts", [[], [1, "x"], "Tag", ["Tag", object()], ["Tag", {"a": 1}]])
def test_hash_struct_refuses_untagged_or_unknown_parts(parts: object) -> None:
    with pytest.raises(TypeError):
        hash_struct(parts)


# --- hash_value ------------------------------------------------------------------------------


def test_equal_values_hash_equal_and_different_values_differ() -> None:
    what = "argument 'x' of task 't'"
    assert hash_value({"a": [1, 2], "b": np.arange(5)}, what=what) == hash_value(
        {"a": [1, 2], "b": np.arange(5)}, what=what
    )
    assert hash_value(np.arange(5), what=what) != hash_value(np.arange(1, 6), what=what)
    assert hash_value((1, 2), what=what) != hash_value([1, 2], what=what)
    assert hash_value("1", what=what) != hash_value(1, what=what)


def test_unhashable_argument_error_names_the_argument_and_the_fix() -> None:
    with pytest.raises(ConfigError) as raised:
        hash_value({"lock": threading.Lock()}, what="argument 'data' of task 'extract'")
    message = str(raised.value)
    assert "argument 'data' of task 'extract'" in message
    assert "cache_key_fn" in message and "hashable" in message


# --- hash_function ---------------------------------------------------------------------------


def load_module(directory: Path, name: str, source: str, variant: str = "") -> ModuleType:
    """Import `source` as module `name` from a real file (a fresh module object each call)."""
    path = directory / f"{name}{variant}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_adder(n):
    def add(x):
        return x + n

    return add


def test_closure_values_change_the_hash() -> None:
    assert hash_function(make_adder(1)) != hash_function(make_adder(2))
    assert hash_function(make_adder(1)) == hash_function(make_adder(1))  # distinct objects


def test_referenced_global_values_change_the_hash(tmp_path: Path) -> None:
    source = """
        THRESHOLD = {value}

        def above(x):
            return x > THRESHOLD
    """
    first, changed, reverted = (
        hash_function(load_module(tmp_path, "globals_mod", source.format(value=v), f"_{i}").above)
        for i, v in enumerate([1, 2, 1])
    )
    assert first != changed and first == reverted


def test_a_change_in_a_called_helper_changes_the_caller(tmp_path: Path) -> None:
    source = """
        def helper(x):
            return x * {factor}

        def task_body(x):
            return helper(x) + 1
    """
    modules = [load_module(tmp_path, "helper_mod", source.format(factor=n), str(n)) for n in (2, 3)]
    first, changed = (hash_function(module.task_body) for module in modules)
    assert first != changed


def test_source_change_changes_the_hash_but_decorators_comments_and_layout_do_not(
    tmp_path: Path,
) -> None:
    base = """
        def identity(f=None, **options):
            return f if f is not None else (lambda g: g)

        @identity(retries=3)
        def work(x):
            return x + 1
    """
    reformatted = """
        def identity(f=None, **options):
            return f if f is not None else (lambda g: g)


        # a comment, other retries, other layout
        @identity(retries=4, tags=["x"])
        def work(x):
            return (x
                    + 1)  # same code
    """
    edited = base.replace("x + 1", "x + 2")
    hashes = [
        hash_function(load_module(tmp_path, "source_mod", text, f"_{i}").work)
        for i, text in enumerate([base, reformatted, edited, base])
    ]
    assert hashes[0] == hashes[1] == hashes[3]
    assert hashes[0] != hashes[2]


def test_functions_without_source_hash_by_code(tmp_path: Path) -> None:
    namespace_a: dict = {}
    namespace_b: dict = {}
    exec("def f(x):\n    return x * 2\n", namespace_a)
    exec("def f(x):\n    return x * 3\n", namespace_b)
    assert hash_function(namespace_a["f"]) != hash_function(namespace_b["f"])


def test_unhashable_global_names_the_function_and_the_global(tmp_path: Path) -> None:
    module = load_module(
        tmp_path,
        "lock_mod",
        """
        import threading
        LOCK = threading.Lock()

        def guarded(x):
            with LOCK:
                return x
        """,
    )
    with pytest.raises(ConfigError) as raised:
        hash_function(module.guarded)
    message = str(raised.value)
    assert "global 'LOCK'" in message and "lock_mod.guarded" in message
    assert "version=" in message


def test_unhashable_closure_value_is_named() -> None:
    lock = threading.Lock()

    def guarded(x):
        with lock:
            return x

    with pytest.raises(ConfigError, match="closure variable 'lock' of function"):
        hash_function(guarded)


def test_library_functions_modules_and_builtins_hash_by_name() -> None:
    import json as json_module

    def summarize(values):
        return json_module.dumps(float(np.mean(values))) + str(len(values))

    assert hash_function(summarize) == hash_function(summarize)
    assert hash_function(json_module.dumps) != hash_function(json_module.loads)
    assert hash_function(len) != hash_function(max)


def test_repeated_calls_are_cached_per_function_object() -> None:
    func = make_adder(5)
    first = hash_function(func)
    start = time.perf_counter()
    for _ in range(10_000):
        assert hash_function(func) == first
    assert time.perf_counter() - start < 0.5


HELPER_MODULE = """
    import numpy as np

    THRESHOLD = 3
    WORDS = {"alpha", "beta", "gamma", "delta"}

    def helper(x):
        return x in {"a", "b", "c", "d", "e"}

    def scaled(x):
        return helper(x) * THRESHOLD + len(WORDS)

    def make(n):
        def inner(x):
            return x + n
        return inner

    def ping(n):
        return pong(n - 1) if n else 0

    def pong(n):
        return ping(n - 1) if n else 1

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def uses_numpy(x):
        return np.mean(x)
"""

HASH_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import hashing_helper as m
from dagrun.content_hashing import content_hash
from dagrun.hashing import hash_function, hash_value
names = ["scaled", "ping", "pong", "fib", "uses_numpy"]
if sys.argv[2] == "reverse":
    names.reverse()
out = {name: hash_function(getattr(m, name)) for name in names}
out["closure"] = hash_function(m.make(2))
out["value"] = hash_value({"b": [1, 2.5, None], "a": {"x", "y", "z"}, "n": np.arange(10)}, what="v")
out["content"] = content_hash(b"payload")
print(json.dumps(out, sort_keys=True))
"""


def test_hashes_are_deterministic_across_processes_and_call_orders(tmp_path: Path) -> None:
    (tmp_path / "hashing_helper.py").write_text(textwrap.dedent(HELPER_MODULE))
    outputs = []
    for seed, order in (("1", "forward"), ("2", "reverse"), ("3", "forward")):
        result = subprocess.run(
            [sys.executable, "-c", HASH_SCRIPT, str(tmp_path), order],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(set(outputs[0].values())) == len(outputs[0])  # and they all differ


# --- content_hash ----------------------------------------------------------------------------


def test_content_hash_does_not_depend_on_how_the_payload_is_framed() -> None:
    payload = np.random.default_rng(0).integers(0, 255, 3 * 2**20 + 12345, np.uint8)
    data = memoryview(payload).cast("B")
    whole = content_hash(data)
    assert len(whole) == 32 and int(whole, 16) >= 0  # XXH3-128 in hex
    assert whole == xxhash.xxh3_128_hexdigest(bytes(data))  # the documented algorithm
    cut = 2**20 - 7
    assert content_hash([data[:cut], data[cut : cut + 10], b"", data[cut + 10 :]]) == whole
    assert content_hash(bytes(data)) == whole
    assert content_hash([b"ab", b"c"]) == content_hash(b"abc") != content_hash(b"abd")
    assert content_hash(np.arange(4, dtype=np.int64).reshape(2, 2)) == content_hash(
        np.arange(4, dtype=np.int64).tobytes()
    )  # multi-dimensional buffers hash as their bytes


@pytest.mark.parametrize("position", [0, 1, 2**20, -1])
def test_content_hash_detects_a_flipped_bit_anywhere(position: int) -> None:
    data = bytearray(np.random.default_rng(1).integers(0, 255, 2 * 2**20, np.uint8))
    whole = content_hash(data)
    for bit in (0, 7):
        flipped = bytearray(data)
        flipped[position] ^= 1 << bit
        assert content_hash(flipped) != whole


def test_content_hash_detects_truncation_and_extension() -> None:
    data = bytes(range(256)) * 4096
    whole = content_hash(data)
    assert content_hash(data[:-1]) != whole
    assert content_hash(data + b"\x00") != whole
    assert content_hash(b"") != content_hash(b"\x00") != content_hash(b"\x00\x00")


def test_content_hasher_streams_and_checks_the_declared_size() -> None:
    data = bytes(range(256)) * 1000
    with ContentHasher(len(data)) as hasher:
        for start in range(0, len(data), 999):
            hasher.update(data[start : start + 999])
        assert hasher.hexdigest() == content_hash(data)
    short = ContentHasher(len(data))
    short.update(data[:-1])
    with pytest.raises(ValueError, match="got 255999 of the declared 256000 bytes"):
        short.hexdigest()  # a short read is an error, not a digest of the wrong bytes
    with pytest.raises(ValueError, match="more than the declared 3 bytes"):
        ContentHasher(3).update(b"four")
    with ContentHasher(0) as empty:
        assert empty.hexdigest() == content_hash(b"")
    with pytest.raises(ValueError, match="size"):
        ContentHasher(-1)
