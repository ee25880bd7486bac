"""Settings read from the environment, and cluster configs read from `cluster_configs/*.yaml`.

Nothing here needs a config file to start: every setting has a default and an environment
variable that overrides it.

| variable                      | default                  | meaning                              |
|-------------------------------|--------------------------|--------------------------------------|
| `DAGRUN_HOME`                 | `~/.dagrun`              | database, results, cluster configs   |
| `DAGRUN_CLUSTER`              | unset (local cluster)    | cluster config name or path          |
| `DAGRUN_EXECUTOR`             | unset (the flow's)       | `threads`, `in-process` or `dask`    |
| `DAGRUN_RESULTS`              | `$DAGRUN_HOME/results`   | result store location (path or URL)  |
| `DAGRUN_RESULTS_KEY`          | unset                    | key that signs result-store entries  |
| `DAGRUN_RESULTS_TRUST_PICKLE` | unset                    | `1` unpickles entries of a store     |
|                               |                          | others can write, without a key      |
| `DAGRUN_REFRESH_CACHE`        | unset                    | `1` recomputes every cached task     |
| `DAGRUN_DATABASE_URL`         | `$DAGRUN_HOME/dagrun.db` | run-history database                 |
| `DAGRUN_LOG_CAP_BYTES`        | `10000000`               | log bytes per task run attempt (`off`) |

Everything dagrun creates under `DAGRUN_HOME` is private to the user (see
`dagrun.private_files`); a home that exists and is open to others is left as it is, with one
warning per process.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from dagrun.private_files import open_to_others

logger = logging.getLogger("dagrun.config")

_checked_homes: set[Path] = set()


def dagrun_home() -> Path:
    """The directory holding dagrun's database, results and user cluster configs."""
    home = Path(os.environ.get("DAGRUN_HOME") or Path.home() / ".dagrun").expanduser()
    if home not in _checked_homes:
        _checked_homes.add(home)
        _warn_if_open_to_others(home)
    return home


def _warn_if_open_to_others(home: Path) -> None:
    """One line when other users can get into the home: it holds parameters, logs, results."""
    try:
        mode = home.stat().st_mode & 0o777
    except OSError:
        return  # not created yet: dagrun creates it private
    if open_to_others(mode):
        logger.warning(
            "dagrun home %s is open to other users (mode %04o): they can read run parameters, "
            "logs and cached results; make it private with: chmod 700 %s",
            home, mode, shlex.quote(str(home)),
        )


def env_cluster() -> str | None:
    """The cluster config name or path chosen by `DAGRUN_CLUSTER`, if any."""
    return os.environ.get("DAGRUN_CLUSTER") or None


def env_executor() -> str | None:
    """The executor kind chosen by `DAGRUN_EXECUTOR` (`threads`, `in-process`, `dask`), if any:
    it runs unmodified code, Prefect's examples included, on another executor."""
    return os.environ.get("DAGRUN_EXECUTOR", "").strip().lower() or None


def env_flag(name: str) -> bool:
    """True when the environment variable is set to a truthy value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
