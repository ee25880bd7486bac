"""A huge parameter is stored as a summary (type, size, hash), and API pages stay small."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from console_script import running_server
from dagrun import flow
from dagrun.executors import InProcessExecutor
from dagrun.history import HistoryStore
from dagrun.history.parameters import MAX_PARAMETER_BYTES

MB = 1024 * 1024


@flow(executor=InProcessExecutor())
def takes(data: object, label: str = "small") -> int:
    return len(data) if hasattr(data, "__len__") else 0


def stored_runs() -> list[dict]:
    store = HistoryStore.from_env()
    try:
        return store.list_flow_runs()
    finally:
        store.close()


def summary(type_name: str, data: bytes) -> str:
    return (
        f"<{type_name} of {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}: "
        f"too large to store (over {MAX_PARAMETER_BYTES} bytes)>"
    )


def test_a_10_mb_parameter_is_stored_as_its_type_size_and_hash(dagrun_home: Path) -> None:
    text = "x" * (10 * MB)
    assert takes(text, label="big") == 10 * MB
    database = sum(path.stat().st_size for path in dagrun_home.glob("dagrun.db*"))
    assert database < 1 * MB  # was 21 MB: the value stored whole, twice
    [run] = stored_runs()
    assert run["parameters"] == {"data": summary("str", text.encode()), "label": "big"}


@pytest.mark.parametrize(
    ("value", "type_name", "stored_bytes"),
    [
        (b"\x00" * (2 * MB), "bytes", b"\x00" * (2 * MB)),  # not via its 4x-longer repr
        (list(range(200_000)), "list", json.dumps(list(range(200_000))).encode()),
        ({"rows": ["é" * 100] * 1000}, "dict", json.dumps({"rows": ["é" * 100] * 1000}).encode()),
    ],
)
def test_large_values_of_any_type_are_summarized(value: object, type_name: str, stored_bytes: bytes) -> None:
    takes(value)
    [run] = stored_runs()
    assert run["parameters"]["data"] == summary(type_name, stored_bytes)


def test_a_parameter_up_to_the_cap_is_stored_whole() -> None:
    at_cap = "é" * (MAX_PARAMETER_BYTES // 2)  # two bytes each in UTF-8: exactly the cap
    takes(at_cap)
    takes(at_cap + "x")
    over, whole = stored_runs()  # newest first
    assert whole["parameters"]["data"] == at_cap
    assert over["parameters"]["data"] == summary("str", (at_cap + "x").encode())


@pytest.fixture
def server_port(tmp_path: Path) -> Iterator[int]:
    """A real `dagrun server` subprocess on 127.0.0.1, over this test's DAGRUN_HOME."""
    with running_server(cwd=tmp_path) as (_, port):
        yield port


def http_get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.status == 200
        return response.read()


def test_the_runs_page_lists_large_parameters_as_summaries(server_port: int) -> None:
    value = "y" * 50_000  # under the store's cap: stored whole, but not listed whole
    for _ in range(20):
        takes(value)
    page = http_get(server_port, "/api/runs")
    assert len(page) < 20_000  # was 1 MB: 20 x 50 KB
    runs = json.loads(page)
    assert len(runs) == 20
    expected = (
        f"<str of 50000 bytes, sha256 {hashlib.sha256(value.encode()).hexdigest()}: "
        "too large to list (over 1024 bytes)>"
    )
    assert all(run["parameters"] == {"data": expected, "label": "small"} for run in runs)
    run = json.loads(http_get(server_port, f"/api/runs/{runs[0]['id']}"))
    assert run["parameters"] == {"data": value, "label": "small"}  # the run's own page has it all
