"""Futures inside dataclasses and pydantic models are resolved before the task runs, as
Prefect's `visit_collection` resolves them, on every executor."""

from __future__ import annotations

from dataclasses import dataclass, field

import pydantic

from dagrun import flow, task


@dataclass
class Batch:
    name: str
    sizes: list = field(default_factory=list)
    label: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.label = f"{self.name}:{len(self.sizes)}"


@dataclass(frozen=True)
class Frozen:
    value: object


class Settings(pydantic.BaseModel):
    rate: float
    note: str = "default"
    _secret: str = pydantic.PrivateAttr(default="")


@task
def size(n: int) -> int:
    return n * 10


@task
def rate() -> float:
    return 1.5


@task
def describe(batch: Batch, frozen: Frozen, settings: Settings) -> tuple:
    return batch.sizes, batch.label, frozen.value, settings.rate, settings.note, settings._secret, type(settings.rate)


def test_futures_in_dataclass_and_model_fields_are_resolved_on_every_executor(executor):
    @flow(executor=executor)
    def pipeline() -> tuple:
        settings = Settings(rate=2.0)
        settings._secret = "kept"
        settings = settings.model_copy(update={"rate": rate.submit()})  # a future in a model field
        batch = Batch("b", [size.submit(1), size.submit(2)])
        return describe(batch, Frozen(size.submit(3)), settings)

    sizes, label, frozen, settings_rate, note, secret, rate_type = pipeline()
    # Rebuilt through the constructor, as Prefect does: __post_init__ runs on the values.
    assert (sizes, label, frozen) == ([10, 20], "b:2", 30)
    assert (settings_rate, note, secret, rate_type) == (1.5, "default", "kept", float)


@dataclass(eq=False)
class Node:
    name: str
    parent: Node | None = None
    children: list = field(default_factory=list)


@task
def family(node: Node, batch: Batch) -> tuple:
    return node.children[0].parent.name, batch.label


def test_dataclasses_without_futures_reach_the_task_as_they_are_cycles_too(executor):
    @flow(executor=executor)
    def pipeline() -> tuple:
        root = Node("root")
        root.children.append(Node("leaf", parent=root))  # a cycle: walked once, as in Prefect
        return family(root, Batch("plain", [1, 2, 3]))

    assert pipeline() == ("root", "plain:3")


@task(cache=True)
def cached_label(batch: Batch, log: str) -> str:
    with open(log, "a") as handle:
        handle.write("ran\n")
    return batch.label


def test_a_cached_task_keys_a_dataclass_holding_futures_by_their_values(executor, calls):
    @flow(executor=executor)
    def pipeline(n: int) -> str:
        return cached_label(Batch("b", [size.submit(n)]), str(calls.path))

    assert [pipeline(1), pipeline(1), pipeline(2)] == ["b:1", "b:1", "b:1"]
    assert calls.count("ran") == 2  # the same upstream value hits; another one misses
