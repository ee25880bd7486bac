"""Cache decisions, made in the driver before a task is dispatched (the planner).

The pieces a worker needs too (the task's identity hash, entry expiry, `task_input_hash`)
live in `dagrun.cache_keys`; this module is driver-side only.

A task's cache key is a tagged hash of
- its identity: `version=` when pinned, else its code (source, closure values, referenced
  globals: `dagrun.hashing.hash_function`);
- each argument by name: literal values hashed strictly (`hash_value`), upstream futures by
  the content hash of their result, never their value, so the driver needs no data;
or, with `cache_key_fn(context, parameters)`, the function's answer (hashed with the task's
name, so two tasks never share an entry by accident).

A decision is a hit (the entry's header is read, nothing else) or a miss with a reason:
code changed, argument X changed, upstream X changed, expired, refresh requested, no entry.
Reasons come from comparing the call's key components with those recorded for the same call
(flow, task, call position) when it last ran, kept in `$DAGRUN_HOME/cache-explain/`.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagrun.cache_keys import CacheKeyContext, task_identity
from dagrun.config import dagrun_home
from dagrun.futures import TaskFuture, allow_failure, unmapped
from dagrun.hashing import hash_struct, hash_value
from dagrun.nested import WalkedList, fields_of, holds
from dagrun.private_files import make_directories
from dagrun.results import EntryInfo, ResultStore


# Scalars whose equal values (of one type) always hash alike; floats are not (-0.0 == 0.0).
_MEMO_KINDS = frozenset({int, str, bytes, bool, type(None)})


@dataclass(frozen=True, slots=True)
class KeyParts:
    """A call's cache key and what it was made of (for explaining the next miss)."""

    key: str | None
    identity: str
    inputs: dict[str, list[str]] = field(default_factory=dict)  # name -> [kind, hash]


@dataclass(frozen=True, slots=True)
class CacheDecision:
    parts: KeyParts
    entry: EntryInfo | None
    reason: str

    @property
    def hit(self) -> bool:
        return self.entry is not None


class CachePlanner:
    """Computes keys and decides hits for the cached tasks of one flow run."""

    def __init__(self, store: ResultStore, flow_name: str, *, refresh_all: bool) -> None:
        self.store = store
        self.refresh_all = refresh_all
        self.decisions: list[tuple[str, CacheDecision]] = []
        self._flow_name = flow_name
        self._previous = _load_explanations(flow_name)
        self._recorded: dict[str, dict[str, Any]] = {}
        # Per task, computed once per flow run rather than per call (a map of 500 hits
        # would otherwise pay for 500 signatures and identity hashes).
        self._signatures: dict[Any, inspect.Signature] = {}
        self._identities: dict[Any, str] = {}
        self._value_hashes: dict[tuple[type, Any], str] = {}

    def key_parts(
        self,
        task: Any,
        task_run_name: str,
        args: tuple,
        kwargs: dict,
        upstream_hash: Callable[[Any], str],
        context: CacheKeyContext,
        resolve_values: Callable[[Any], Any],
    ) -> KeyParts:
        """The key for one call. `upstream_hash(future)` gives an upstream's content hash;
        `resolve_values(obj)` replaces futures by values (only `cache_key_fn` needs them)."""
        identity = self._identities.get(task)
        if identity is None:
            identity = self._identities[task] = task_identity(task)
        signature = self._signatures.get(task)
        if signature is None:
            signature = self._signatures[task] = inspect.signature(task.fn)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if task.cache_key_fn is not None:
            user_key = task.cache_key_fn(context, resolve_values(dict(bound.arguments)))
            if user_key is None:
                return KeyParts(None, identity)
            return KeyParts(hash_struct(["UserKey", task.name, str(user_key)]), identity, {"key": ["value", str(user_key)]})
        policy = getattr(task, "cache_policy", None)
        inputs: dict[str, list[str]] = {}
        for name, value in bound.arguments.items():
            if policy is not None and ("inputs" not in policy.parts or name in policy.exclude):
                continue
            futures: list[Any] = []
            stand_in = _with_upstream_hashes(value, futures, upstream_hash)
            kind = "upstream" if futures else "value"
            inputs[name] = [kind, self._hash_value(stand_in, name, task)]
        if policy is not None:
            return _policy_key_parts(task, policy, identity, inputs, context)
        key = hash_struct(["TaskKey", identity, sorted((name, *parts) for name, parts in inputs.items())])
        return KeyParts(key, identity, inputs)

    def _hash_value(self, value: Any, name: str, task: Any) -> str:
        """`hash_value`, remembered for small scalars: a `map`'s unmapped arguments repeat."""
        kind = type(value)
        if kind not in _MEMO_KINDS or (kind in (str, bytes) and len(value) > 1024):
            return hash_value(value, what=f"argument '{name}' of task '{task.name}'")
        memo = (kind, value)  # the type too: True == 1, but they hash differently
        digest = self._value_hashes.get(memo)
        if digest is None:
            if len(self._value_hashes) >= 10_000:
                self._value_hashes.clear()
            digest = self._value_hashes[memo] = hash_value(value, what=f"argument '{name}' of task '{task.name}'")
        return digest

    def decide(self, task: Any, task_run_name: str, parts: KeyParts) -> CacheDecision:
        if parts.key is None:
            decision = CacheDecision(parts, None, "cache_key_fn returned None")
        elif self.refresh_all or task.refresh_cache:
            decision = CacheDecision(parts, None, "refresh requested")
        else:
            entry = self.store.info(parts.key)
            refusal = None if entry is None else self.store.refusal(entry)
            if refusal is not None:
                decision = CacheDecision(parts, None, refusal)
            elif entry is not None and (entry.expires_at is None or entry.expires_at > time.time()):
                decision = CacheDecision(parts, entry, "hit")
            elif entry is not None:
                decision = CacheDecision(parts, None, "expired")
            else:
                decision = CacheDecision(parts, None, self._why_missing(task_run_name, parts))
        self.decisions.append((task_run_name, decision))
        self._recorded[task_run_name] = {"identity": parts.identity, "inputs": parts.inputs}
        return decision

    def save_explanations(self) -> None:
        """Remember this run's key parts so the next run can say why a call missed."""
        if self._recorded:
            _save_explanations(self._flow_name, {**self._previous, **self._recorded})

    def _why_missing(self, task_run_name: str, parts: KeyParts) -> str:
        before = self._previous.get(task_run_name)
        if before is None:
            return "no entry"
        if before.get("identity") != parts.identity:
            return "code changed"
        old_inputs = before.get("inputs", {})
        for name, (kind, digest) in parts.inputs.items():
            if old_inputs.get(name, [None, None])[1] != digest:
                return f"{'upstream' if kind == 'upstream' else 'argument'} '{name}' changed"
        return "no entry"


def _policy_key_parts(
    task: Any, policy: Any, identity: str, inputs: dict[str, list[str]], context: CacheKeyContext
) -> KeyParts:
    """The key a Prefect-style `cache_policy` asks for (see `dagrun.cache_policies`): only the
    parts it names; the task's name is always in it, so tasks never share entries."""
    if "flow_parameters" in policy.parts:
        what = f"the flow parameters (cache_policy of task '{task.name}')"
        inputs["flow parameters"] = ["value", hash_value(context.flow_parameters, what=what)]
    if "run_id" in policy.parts:
        inputs["flow run id"] = ["value", context.flow_run_id]
    source = identity if "task_source" in policy.parts else ""
    key = hash_struct(["PolicyKey", task.name, source, sorted((name, *parts) for name, parts in inputs.items())])
    # Without TASK_SOURCE a code change does not miss, so it must not be given as the reason.
    return KeyParts(key, source, inputs)


def _with_upstream_hashes(value: Any, futures: list[Any], upstream_hash: Callable[[Any], str]) -> Any:
    """`value` with futures (nested in list/tuple/dict/set, dataclass and model fields)
    replaced by their content hashes."""
    kind = type(value)
    if kind is TaskFuture:
        futures.append(value)
        return ("dagrun-upstream", upstream_hash(value))
    if kind is unmapped or kind is allow_failure:
        return _with_upstream_hashes(value.value, futures, upstream_hash)
    if kind in (list, tuple):
        return kind(_with_upstream_hashes(item, futures, upstream_hash) for item in value)
    if kind in (set, frozenset):
        return ("set", sorted(repr(_with_upstream_hashes(item, futures, upstream_hash)) for item in value))
    if kind is dict:
        return {key: _with_upstream_hashes(item, futures, upstream_hash) for key, item in value.items()}
    if isinstance(value, WalkedList):  # `task.map`'s FutureList
        return [_with_upstream_hashes(item, futures, upstream_hash) for item in value]
    fields = fields_of(value)
    if fields and holds(value, TaskFuture):  # a dataclass or model holding futures: its class and fields
        before = len(futures)
        hashed = {name: _with_upstream_hashes(item, futures, upstream_hash) for name, item in fields.items()}
        if len(futures) > before:
            return ("dagrun-fields", f"{type(value).__module__}.{type(value).__qualname__}", hashed)
    return value


def _explanations_path(flow_name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", flow_name)[:100] or "flow"
    return dagrun_home() / "cache-explain" / f"{safe}.json"


def _load_explanations(flow_name: str) -> dict[str, Any]:
    try:
        return json.loads(_explanations_path(flow_name).read_text())
    except (OSError, ValueError):
        return {}


def _save_explanations(flow_name: str, data: dict[str, Any]) -> None:
    path = _explanations_path(flow_name)
    try:
        make_directories(path.parent)  # files: NamedTemporaryFile makes them 0600
        text = json.dumps(data)  # then one write: json.dump writes each small piece on its own
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(text)
        os.replace(handle.name, path)
    except OSError:
        pass  # explanations are a convenience; a read-only home must not fail the flow
