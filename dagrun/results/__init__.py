"""The result store: where cached task results live, checksummed and written atomically.

See `dagrun.results.store` for the entry format and trust policy, and
`dagrun.results.serializers` for how values become bytes.
"""

from dagrun.results.store import CacheMiss, EntryInfo, ResultStore

__all__ = ["CacheMiss", "EntryInfo", "ResultStore"]
