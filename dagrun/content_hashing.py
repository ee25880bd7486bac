"""Checksums of serialized bytes: XXH3-128, built for speed (tens of GB/s), as every stored and
every loaded result goes through it. It catches corruption (a flipped bit, a torn or truncated
write), not forgery: tamper-proofing is the result store's HMAC-SHA256 (`dagrun.results.envelope`).

| function / class | hashes                                  | used for                          |
|------------------|-----------------------------------------|-----------------------------------|
| `content_hash`   | one buffer or a sequence of frames      | entry checksums, upstream inputs  |
| `ContentHasher`  | bytes fed in pieces (streamed writes)   | the result store's envelope       |

Runs on workers too: it imports nothing of dagrun.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import xxhash

Buffer = Union[bytes, bytearray, memoryview]


def content_hash(payload: Buffer | Sequence[Buffer]) -> str:
    """Hex XXH3-128 (32 digits) of serialized bytes: an entry's checksum.

    `payload` is one buffer or a sequence of frames, hashed as their concatenation, so how the
    bytes are framed does not change the hash.

    An integrity check against accidents (a flipped bit, a torn or truncated write), not against
    an attacker: XXH3 is not collision resistant, and anyone can craft two payloads with one
    checksum. Protection against tampering is the result store's keyed HMAC-SHA256, not this.
    """
    frames = [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    views = [memoryview(frame).cast("B") for frame in frames]
    with ContentHasher(sum(view.nbytes for view in views)) as hasher:
        for view in views:
            hasher.update(view)
        return hasher.hexdigest()


class ContentHasher:
    """`content_hash` of a payload of known size, fed piece by piece as it is read or written.

    A streaming XXH3-128 (the digest is the same whatever the pieces), which also checks that
    exactly the declared `size` bytes were fed: a short read is an error, not a wrong digest.
    Like `content_hash`, it detects corruption, not tampering.
    """

    __slots__ = ("_size", "_fed", "_state")

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be a number of bytes >= 0, got {size!r}")
        self._size = size
        self._fed = 0
        self._state = xxhash.xxh3_128()

    def __enter__(self) -> ContentHasher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (the hash runs in the caller's thread); kept for `with` use."""

    def update(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        if self._fed + view.nbytes > self._size:
            raise ValueError(f"more than the declared {self._size} bytes")
        self._fed += view.nbytes
        self._state.update(view)

    def hexdigest(self) -> str:
        if self._fed != self._size:
            raise ValueError(f"got {self._fed} of the declared {self._size} bytes")
        return self._state.hexdigest()
