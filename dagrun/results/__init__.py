"""The result store: where cached task results live, checksummed and written atomically.

| module           | what it holds                                                        |
|------------------|----------------------------------------------------------------------|
| `store.py`       | `ResultStore`: put / get / lookup / clear, and what a bad entry gets |
| `envelope.py`    | an entry's bytes: the format, signing, and the trust checks          |
| `keys.py`        | valid keys and names, the layout under the root, atomic file access  |
| `serializers.py` | how values become payload frames and back                            |

Everything here runs on workers too: nothing imports the driver, the history or an executor.
"""

from dagrun.results.envelope import EntryInfo
from dagrun.results.store import CacheMiss, ResultStore

__all__ = ["CacheMiss", "EntryInfo", "ResultStore"]
