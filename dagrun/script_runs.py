"""Flow runs a user's file starts by itself while `dagrun run FILE` imports it.

A script that calls its flow at module level (no `if __name__ == "__main__":`) runs it when
imported. `dagrun run FILE` then must not run it a second time: it reports the run the file
made, as `python FILE` would have shown it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_collecting: list[list[Any]] = []  # one list per active `collect()`, innermost last


@contextlib.contextmanager
def collect() -> Iterator[list[Any]]:
    """Gather the final states of top-level flow runs that end inside the block."""
    states: list[Any] = []
    _collecting.append(states)
    try:
        yield states
    finally:
        _collecting.remove(states)


def note(state: Any) -> None:
    """Called by the engine when a top-level flow run ends."""
    if _collecting:
        _collecting[-1].append(state)
