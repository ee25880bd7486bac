"""The two tracebacks of a failed run: the user's view and the full one.

A task's exception passes through dagrun's runner and retry loop and Dask's worker before
anyone sees it, and its own frames come from a function shipped by value (cloudpickle names
their file `<dynamic-code>` and the driver has no source lines for it). So the tracebacks are
rendered where the frames are live, on the worker, with each frame's real file (its module's
`__file__`), line number and source line:

    full    every frame, from the worker thread's start through Dask and dagrun to the raise
    user    the same error from the first frame that is not dagrun's, Dask's or the standard
            library's: the user's code and whatever it called (libraries, dagrun's API)

`capture(exc)` renders both and attaches them to the exception, which carries them to the
driver (exceptions pickle their attributes); `views_of(exc)` reads them there, or renders them
from the exception's own traceback for an exception that was not captured (a flow body's).
A source line a worker cannot read (the file is not on that machine) is filled in by
`views_of` on the driver, where the user's file is.

Runs on workers: imports nothing from dagrun.
"""

from __future__ import annotations

import linecache
import os
import re
import sysconfig
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType, TracebackType

ATTRIBUTE = "dagrun_tracebacks"
_PICKLED_BY_VALUE = "<dynamic-code>"  # cloudpickle's file name for code it ships by value
_SITE_PACKAGES = tuple({sysconfig.get_paths()[key] + os.sep for key in ("purelib", "platlib")})
_STDLIB = tuple({sysconfig.get_paths()[key] + os.sep for key in ("stdlib", "platstdlib")})
_FRAME_LINE = re.compile(r'^(?P<margin>[ |]*)File "(?P<file>[^"]+)", line (?P<line>\d+), in ')
# dagrun, and the packages whose frames sit between a worker thread and dagrun's runner.
_INTERNAL_PACKAGES = frozenset({"dagrun", "distributed", "dask", "tornado", "tblib", "cloudpickle"})


@dataclass(frozen=True, slots=True)
class TracebackViews:
    """A failure as the user reads it first (`user`) and with every frame (`full`)."""

    user: str
    full: str

    @property
    def has_user_frames(self) -> bool:
        """False when the user's view is only the error (dagrun's own errors, like a timeout)."""
        return "Traceback (most recent call last):" in self.user


def capture(exception: BaseException) -> TracebackViews:
    """Render both views now, while the frames and their callers are live, and attach them
    to `exception` so they travel with it (to the driver, into the history)."""
    views = _render(exception, with_callers=True)
    try:
        setattr(exception, ATTRIBUTE, views)
    except AttributeError:  # an exception type with __slots__ and no __dict__: render later
        pass
    return views


def views_of(exception: BaseException) -> TracebackViews:
    """The views captured where `exception` was raised (with the source lines that process
    could not read filled in from files here), else rendered from its traceback."""
    views = getattr(exception, ATTRIBUTE, None)
    if isinstance(views, TracebackViews):
        return TracebackViews(_with_source_lines(views.user), _with_source_lines(views.full))
    return _render(exception, with_callers=False)


def was_captured(exception: BaseException) -> bool:
    """Whether a task run captured `exception` (so its failure log line showed the traceback)."""
    return isinstance(getattr(exception, ATTRIBUTE, None), TracebackViews)


def _is_internal(frame: FrameType) -> bool:
    """Whether a frame is dagrun's, an engine package's (Dask, tornado, ...) or the standard
    library's: frames the user's view leaves out above the user's first frame. Packages are
    told by module name (so a source checkout of Dask counts too), the standard library by path
    (a user's `test.py` is not the stdlib's `test`)."""
    package = str(frame.f_globals.get("__name__") or "").partition(".")[0]
    if package in _INTERNAL_PACKAGES:
        return True
    filename = frame.f_code.co_filename
    in_stdlib = filename.startswith(_STDLIB) and not filename.startswith(_SITE_PACKAGES)
    return in_stdlib or filename.startswith("<frozen ")


def _render(exception: BaseException, with_callers: bool) -> TracebackViews:
    full = traceback.TracebackException.from_exception(exception, lookup_lines=False)
    user = traceback.TracebackException.from_exception(exception, lookup_lines=False)
    for full_part, user_part, part in _chain(full, user, exception):
        walked = list(traceback.walk_tb(part.__traceback__))
        frames = [_summary(frame, lineno) for frame, lineno in walked]
        callers = _callers(part.__traceback__) if with_callers and part is exception else []
        full_part.stack = traceback.StackSummary.from_list(callers + frames)
        first_user = next((i for i, (frame, _) in enumerate(walked) if not _is_internal(frame)), len(walked))
        user_part.stack = traceback.StackSummary.from_list(frames[first_user:])
    return TracebackViews(_text(user), _text(full))


_Rendering = traceback.TracebackException


def _chain(
    full: _Rendering, user: _Rendering, exception: BaseException
) -> Iterator[tuple[_Rendering, _Rendering, BaseException]]:
    """Each exception of the chain (causes, contexts, group members) with its two renderings."""
    pending = [(full, user, exception)]
    seen: set[int] = set()
    while pending:
        full_part, user_part, part = pending.pop()
        if id(full_part) in seen:
            continue
        seen.add(id(full_part))
        yield full_part, user_part, part
        for name in ("__cause__", "__context__"):
            linked = (getattr(full_part, name), getattr(user_part, name), getattr(part, name))
            if None not in linked:
                pending.append(linked)
        members = (getattr(full_part, "exceptions", None), getattr(user_part, "exceptions", None))
        if members[0] and members[1]:  # an exception group (Python 3.11+)
            pending.extend(zip(members[0], members[1], part.exceptions))


def _summary(frame: FrameType, lineno: int | None) -> traceback.FrameSummary:
    """One frame with its real file name and, when the file is readable here, its source line."""
    filename = frame.f_code.co_filename
    if filename == _PICKLED_BY_VALUE:
        filename = frame.f_globals.get("__file__") or filename
    line = ""
    if lineno is not None and not filename.startswith("<"):
        linecache.checkcache(filename)  # a long-lived worker sees the file as it is now
        line = linecache.getline(filename, lineno, frame.f_globals).strip()
    return traceback.FrameSummary(filename, lineno, frame.f_code.co_name, lookup_line=False, line=line)


def _callers(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    """The live frames that called the traceback's first frame, outermost first."""
    if tb is None:
        return []
    callers = [_summary(frame, lineno) for frame, lineno in traceback.walk_stack(tb.tb_frame.f_back)]
    return callers[::-1]


def _with_source_lines(text: str) -> str:
    """`text` with a source line under each frame line that has none, where the file is
    readable here (a remote worker without the user's file renders file and line only)."""
    lines = text.split("\n")
    filled: list[str] = []
    for index, line in enumerate(lines):
        filled.append(line)
        match = _FRAME_LINE.match(line)
        if match is None:
            continue
        indent = match["margin"] + "  "
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if following.startswith(indent) and not _FRAME_LINE.match(following):
            continue  # it has its source line
        linecache.checkcache(match["file"])
        source = linecache.getline(match["file"], int(match["line"])).strip()
        if source:
            filled.append(indent + source)
    return "\n".join(filled)


def _text(rendering: traceback.TracebackException) -> str:
    return "".join(rendering.format()).rstrip()


def format_exception(exception: BaseException) -> str:
    """An exception's traceback as Python prints it, with real file names and source lines
    (for `logger.exception` in a task shipped by value)."""
    return _render(exception, with_callers=False).full

