"""Settings read from the environment, and cluster configs read from `cluster_configs/*.yaml`.

Nothing here needs a config file to start: every setting has a default and an environment
variable that overrides it.

| variable                | default                     | meaning                                  |
|-------------------------|-----------------------------|------------------------------------------|
| `DAGRUN_HOME`           | `~/.dagrun`                 | database, results, user cluster configs  |
| `DAGRUN_CLUSTER`        | unset (local cluster)       | cluster config name or path for flows    |
| `DAGRUN_RESULTS`        | `$DAGRUN_HOME/results`      | result store location (path or URL)      |
| `DAGRUN_RESULTS_KEY`    | unset                       | key that signs result-store entries      |
| `DAGRUN_REFRESH_CACHE`  | unset                       | `1` recomputes every cached task         |
| `DAGRUN_DATABASE_URL`   | `$DAGRUN_HOME/dagrun.db`    | run-history database                     |
| `DAGRUN_LOG_CAP_BYTES`  | `10000000`                  | log bytes per task run attempt (`off`)   |
"""

from __future__ import annotations

import os
from pathlib import Path


def dagrun_home() -> Path:
    """The directory holding dagrun's database, results and user cluster configs."""
    return Path(os.environ.get("DAGRUN_HOME") or Path.home() / ".dagrun").expanduser()


def env_cluster() -> str | None:
    """The cluster config name or path chosen by `DAGRUN_CLUSTER`, if any."""
    return os.environ.get("DAGRUN_CLUSTER") or None


def env_flag(name: str) -> bool:
    """True when the environment variable is set to a truthy value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
