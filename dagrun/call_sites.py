"""Whether a call's result is thrown away by its caller: `create_table()` as a statement.

A direct task call whose future is discarded is a step of the flow (later task calls wait for
it, as Prefect's blocking call would make them). The caller's bytecode says so without
guessing: in an expression statement the instruction after the call is `POP_TOP`. The answer
depends only on the code object and the call's offset, so it is computed once per call site;
the per-call cost is one frame lookup and one dict lookup.
"""

from __future__ import annotations

import dis
import sys
from types import CodeType, FrameType

_CACHE_LIMIT = 4096
# (id(code), offset) -> (code, discarded); the code object is kept so that its id stays its own.
_answers: dict[tuple[int, int], tuple[CodeType, bool]] = {}


def result_discarded(depth: int = 2) -> bool:
    """True when the call `depth` frames up from this function's caller discards its result
    (`depth=2`: the caller of the function calling this one)."""
    try:
        frame = sys._getframe(depth)
    except ValueError:  # no such frame (called from the top of a thread)
        return False
    return _discarded_at(frame)


def _discarded_at(frame: FrameType) -> bool:
    code, offset = frame.f_code, frame.f_lasti
    answer = _answers.get((id(code), offset))
    if answer is not None and answer[0] is code:
        return answer[1]
    discarded = _next_opname(code, offset) == "POP_TOP"
    if len(_answers) >= _CACHE_LIMIT:
        _answers.clear()  # bounded: call sites are few; a rare refill costs one scan each
    _answers[(id(code), offset)] = (code, discarded)
    return discarded


def _next_opname(code: CodeType, offset: int) -> str | None:
    """The name of the instruction after the one at `offset` (inline caches skipped)."""
    found = False
    for instruction in dis.get_instructions(code):
        if found:
            return instruction.opname
        found = instruction.offset == offset
    return None
