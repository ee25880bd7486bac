"""Importing a user's Python file the way `python FILE` would see it: its directory on
`sys.path`, under a module name of its own so two files named alike do not collide."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from dagrun.errors import ConfigError


def import_file(file: Path) -> ModuleType:
    """Run `file` as module `dagrun_user_<stem>`; what the file raises propagates (callers
    name the file in their messages)."""
    module_name = "dagrun_user_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError("not a Python file (flows are imported from .py files)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    directory = str(file.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec.loader.exec_module(module)
    return module


def describe_syntax_error(error: SyntaxError, file: Path) -> str:
    """`FILE:LINE: SyntaxError: MESSAGE: CODE`, the parts of Python's report on one line; FILE
    is the file with the error (the flow file, or a module it imports)."""
    where = error.filename or str(file)
    if Path(where).resolve() == file.resolve():
        where = str(file)  # as the user wrote it
    line = f":{error.lineno}" if error.lineno else ""
    code = (error.text or "").strip()
    return f"{where}{line}: {type(error).__name__}: {error.msg}" + (f": {code}" if code else "")
