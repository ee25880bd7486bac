"""`from dagrun.logging import get_run_logger` (and `disable_run_logger`), as from `prefect.logging`.

Named like the standard library's module on purpose (Prefect's is `prefect.logging`): dagrun's
own modules import the standard `logging` absolutely, so this module never shadows it.
"""

from __future__ import annotations

from dagrun.logs import disable_run_logger, get_run_logger

__all__ = ["disable_run_logger", "get_run_logger"]
