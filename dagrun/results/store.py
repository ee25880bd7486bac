"""The result store: checksummed, optionally signed, atomically written entries keyed by hex keys.

Workers read and write it directly (the store pickles as its location and key, and opens its
filesystem lazily), so the driver only ever sees keys and `EntryInfo` metadata.

An entry is one file, an envelope:

    offset 0   preamble  "DAGRUNRS", format version (u16), signature length (u16),
                         header length (u32), BLAKE2b-128 of (those lengths + header)
               signature HMAC-SHA256(signing key, version + cache key + header), when signed
               header    JSON: format, key, task_name, serializer, size, frames, checksum,
                         created, expires_at, and payload_mac when signed
               payload   the serializer's frames, each starting at a multiple of 64 bytes
                         (zero bytes pad the head and each frame up to the next one)

Two hashes of the payload, for two different threats:
- `checksum`, XXH3-128 (`dagrun.hashing.content_hash`), always: catches corruption (a flipped
  byte, a torn write). It is fast and unkeyed, so it is no defence against an attacker, who can
  recompute it or craft another payload with the same checksum.
- `payload_mac`, HMAC-SHA256(signing key, "dagrun-result-payload" + version + cache key +
  payload), when a signing key is set: catches tampering. It is in the header, which the
  signature covers, so a valid signature vouches for the payload through it.

Trust policy, in the order `get` applies it; nothing is deserialized before all of it passes:
1. The preamble and header digest are intact and the file is exactly as long as they say
   (truncation), and the header names the requested key (an entry copied to another key).
2. With a signing key, the header's signature verifies for *this* cache key; an entry written
   or copied by someone without the key is refused. Without a key, signatures and MACs are
   ignored. (`lookup` and `info` stop here: they read the head only.)
3. The payload's checksum equals the header's, the padding is zeros, and with a signing key
   the payload's HMAC equals the header's `payload_mac` (compared in constant time).
A failing entry is logged on the "dagrun.results" logger, moved to `<root>/corrupt/`, and
reported as a `CacheMiss`, so the task recomputes. An expired entry is a plain miss.

Reads go into one buffer, laid out like the file and page aligned, and the values are rebuilt
over slices of it (pickle protocol 5 buffers): no copies. The alignment is for speed: the
kernel copies from the page cache much faster into a buffer aligned like the file, and a numpy
array rebuilt over a 64-byte aligned frame is aligned too (an unaligned one computes slowly).

Writes go to a unique temp file in the entry's directory, are flushed and fsynced, then renamed
over the entry (`os.replace`, atomic); two writers of one key both succeed and one file wins.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import logging
import os
import re
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dagrun.config import dagrun_home
from dagrun.errors import ConfigError, ResultStoreError, SerializationError
from dagrun.hashing import ContentHasher
from dagrun.results import keys
from dagrun.results.keys import FsspecFiles, LocalFiles
from dagrun.results.serializers import STORED_SERIALIZERS, check_serializer, dumps, loads

logger = logging.getLogger("dagrun.results")

MAGIC = b"DAGRUNRS"
# 2: XXH3-128 checksum, payload_mac, 64-byte aligned frames (1: BLAKE2b tree checksum, packed)
FORMAT_VERSION = 2
_PREAMBLE = struct.Struct("<8sHHI16s")
_HEAD_READ_GUESS = 64 * 1024  # room for the head of almost every entry
# The payload is read and hashed in chunks: large enough that an uncached file is read in big
# requests, small enough that each chunk is hashed while still in the CPU's cache.
_READ_CHUNK = 8 << 20
FRAME_ALIGNMENT = 64  # a cache line; numpy wants 16 at most
_PAGE_SIZE = 4096
_PAYLOAD_MAC_PREFIX = b"dagrun-result-payload\x00"
_PAYLOAD_MAC_PATTERN = re.compile(r"[0-9a-f]{64}")
_MIN_SIGNING_KEY_BYTES = 16
_SHARD_PATTERN = re.compile(r"[0-9a-f]{2}")


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What the header of one entry says; `size` is the payload's size in bytes."""

    key: str
    task_name: str
    serializer: str
    size: int
    checksum: str
    created: float
    expires_at: float | None
    path: str


class CacheMiss(KeyError):
    """No usable entry for a key: absent, expired, or rejected (`reason` says which)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"No usable result entry {self.key}: {self.reason}"


class _Rejected(Exception):
    """An entry failed verification; `quarantine` says whether to move it aside."""

    def __init__(self, reason: str, *, task_name: str | None = None, quarantine: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.task_name = task_name
        self.quarantine = quarantine


@dataclass(frozen=True, slots=True)
class _Head:
    info: EntryInfo
    length: int  # of the head: preamble, signature and header
    frames: list[tuple[int, int]]  # (offset in the file, length) of each payload frame
    payload_mac: bytes | None  # the header's, verified by the signature; None when unsigned


class ResultStore:
    """A content-addressed result store at a local path or any fsspec URL.

    | call                                 | does                                              |
    |--------------------------------------|---------------------------------------------------|
    | `put(key, value, task_name=...)`     | serialize, hash (and MAC, sign), write atomically |
    | `lookup(key)`                        | header only: a usable (unexpired, signed) entry?  |
    | `get(key)`                           | the verified value, or `CacheMiss`                |
    | `info(key)` / `entries(task_name)`   | headers, expired ones included                    |
    | `clear(task_name=, older_than=)`     | remove entries (and stale temp files)             |
    """

    __slots__ = ("_location", "_signing_key", "_files")

    def __init__(self, location: str | os.PathLike, *, signing_key: bytes | None = None) -> None:
        location = os.fspath(location)
        if not isinstance(location, str) or not location:
            raise ConfigError(f"Invalid result store location {location!r}")
        if signing_key is not None and (
            not isinstance(signing_key, bytes) or len(signing_key) < _MIN_SIGNING_KEY_BYTES
        ):
            raise ConfigError(
                "The result store signing key (DAGRUN_RESULTS_KEY) must be bytes, at least "
                f"{_MIN_SIGNING_KEY_BYTES} long"
            )
        # Local paths are made absolute now, so a pickled store means the same directory.
        self._location = _absolute_local(location)
        self._signing_key = signing_key
        self._files: LocalFiles | FsspecFiles | None = None

    @classmethod
    def from_env(cls, location: str | None = None) -> ResultStore:
        """The store at `location`, else `$DAGRUN_RESULTS`, else `$DAGRUN_HOME/results`;
        signed with `$DAGRUN_RESULTS_KEY` when it is set."""
        location = location or os.environ.get("DAGRUN_RESULTS") or str(dagrun_home() / "results")
        secret = os.environ.get("DAGRUN_RESULTS_KEY")
        return cls(location, signing_key=secret.encode() if secret else None)

    @property
    def location(self) -> str:
        return self._location

    def __repr__(self) -> str:
        return f"ResultStore({self._location!r}, signed={self._signing_key is not None})"

    def __getstate__(self) -> dict[str, Any]:
        # The filesystem object stays behind: each process opens its own, lazily.
        return {"location": self._location, "signing_key": self._signing_key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._location = state["location"]
        self._signing_key = state["signing_key"]
        self._files = None

    # --- writing -----------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: Any,
        *,
        task_name: str,
        serializer: str = "auto",
        expires_at: float | None = None,
    ) -> EntryInfo:
        """Store `value` under `key`, replacing any entry; returns the new entry's header."""
        keys.validate_key(key)
        keys.validate_task_name(task_name)
        check_serializer(serializer)
        if expires_at is not None and not isinstance(expires_at, (int, float)):
            raise ConfigError(f"expires_at must be a POSIX timestamp, got {expires_at!r}")
        try:
            used, frames = dumps(value, serializer)
        except SerializationError as exc:
            raise SerializationError(
                f"Cannot store the result of task {task_name!r}: {exc}"
            ) from exc
        views = [memoryview(frame).cast("B") for frame in frames]
        sizes = [view.nbytes for view in views]
        with ContentHasher(sum(sizes)) as hasher:
            for view in views:
                hasher.update(view)
            checksum = hasher.hexdigest()
        header = {
            "format": FORMAT_VERSION, "key": key, "task_name": task_name, "serializer": used,
            "size": sum(sizes), "frames": sizes, "checksum": checksum, "created": time.time(),
            "expires_at": None if expires_at is None else float(expires_at),
        }
        if self._signing_key is not None:
            mac = self._payload_mac(key)
            for view in views:
                mac.update(view)
            header["payload_mac"] = mac.hexdigest()
        header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        signature = self._sign(key, header_bytes) if self._signing_key is not None else b""
        preamble = _PREAMBLE.pack(
            MAGIC, FORMAT_VERSION, len(signature), len(header_bytes),
            _header_digest(len(signature), header_bytes),
        )
        head = _padded(preamble + signature + header_bytes)
        body: list[memoryview] = []
        end = len(head)
        for view in views:  # each frame starts at the next multiple of FRAME_ALIGNMENT
            if end != _aligned(end):
                body.append(memoryview(bytes(_aligned(end) - end)))
                end = _aligned(end)
            body.append(view)
            end += view.nbytes
        files = self._open()
        path = files.join(keys.shard(key), key)
        try:
            files.write(path, keys.temp_name(key), [head, *body])
        except Exception as exc:  # ENOSPC, permissions, a remote store's own errors
            raise ResultStoreError(
                f"Could not write the result of task {task_name!r} to the result store at "
                f"{self._location}: {type(exc).__name__}: {exc}"
            ) from exc
        return _entry_info(header, files.url(path))

    # --- reading -----------------------------------------------------------------------------

    def lookup(self, key: str) -> EntryInfo | None:
        """The header of a usable entry: present, unexpired, signed if a key is set.

        Reads only the head, so the payload's checksum and MAC are checked later, by `get`."""
        info = self.info(key)
        if info is None or _expired(info):
            return None
        return info

    def info(self, key: str) -> EntryInfo | None:
        """The entry's header, expired or not; None if absent or rejected."""
        opened = self._open_entry(key)
        if opened is None:
            return None
        path, file, size, identity = opened
        try:
            with file:
                head = self._read_head(_Reader(file, size, min(size, _HEAD_READ_GUESS)), key, path)
        except _Rejected as rejected:
            self._discard(key, path, identity, rejected)
            return None
        except OSError as exc:
            raise ResultStoreError(f"Could not read result entry {key}: {exc}") from exc
        return head.info

    def get(self, key: str) -> Any:
        """The entry's value, verified before it is deserialized; raises CacheMiss otherwise."""
        opened = self._open_entry(key)
        if opened is None:
            raise CacheMiss(key, "no entry")
        path, file, size, identity = opened
        try:
            with file:
                reader = _Reader(file, size, size)
                head = self._read_head(reader, key, path)
                if _expired(head.info):
                    raise CacheMiss(key, "expired")
                self._verify_payload(reader, head, key)
        except _Rejected as rejected:
            self._discard(key, path, identity, rejected)
            raise CacheMiss(key, rejected.reason) from None
        except OSError as exc:
            raise ResultStoreError(f"Could not read result entry {key}: {exc}") from exc
        frames = [reader.buffer[start : start + length] for start, length in head.frames]
        try:
            return loads(head.info.serializer, frames)
        except SerializationError as exc:
            # Authentic but unloadable here (a class that no longer exists): recompute, keep it.
            logger.warning(
                "Could not load result entry %s of %r: %s", key, head.info.task_name, exc
            )
            raise CacheMiss(key, str(exc)) from exc

    def entries(self, task_name: str | None = None) -> Iterator[EntryInfo]:
        """Headers of all entries (of one task if given), expired ones included, by key."""
        if task_name is not None:
            keys.validate_task_name(task_name)
        files = self._open()
        for shard in sorted(files.listdir(files.root)):
            if _SHARD_PATTERN.fullmatch(shard) is None:
                continue
            for name in sorted(files.listdir(files.join(shard))):
                if keys.is_entry_name(shard, name):
                    info = self.info(name)
                    if info is not None and task_name in (None, info.task_name):
                        yield info

    def clear(self, *, task_name: str | None = None, older_than: float | None = None) -> int:
        """Remove entries (of one task, created more than `older_than` seconds ago, if given).

        Returns how many entries were removed. Temp files left by crashed writers are removed
        once they are an hour old (younger ones may be writes in progress); entries moved
        aside as corrupt are removed too when no task is given.
        """
        if older_than is not None and (not isinstance(older_than, (int, float)) or older_than < 0):
            raise ConfigError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        now = time.time()
        cutoff = None if older_than is None else now - older_than
        files = self._open()
        removed = 0
        for info in list(self.entries(task_name)):
            if cutoff is None or info.created < cutoff:
                files.remove(files.join(keys.shard(info.key), info.key))
                removed += 1
        for shard in files.listdir(files.root):
            if _SHARD_PATTERN.fullmatch(shard) is None:
                continue
            for name in files.listdir(files.join(shard)):
                path = files.join(shard, name)
                if keys.is_temp_name(name) and files.mtime(path) < now - keys.STALE_TEMP_SECONDS:
                    files.remove(path)
        if task_name is None:
            for name in files.listdir(files.join(keys.CORRUPT_DIR)):
                path = files.join(keys.CORRUPT_DIR, name)
                if cutoff is None or files.mtime(path) < cutoff:
                    files.remove(path)
        return removed

    # --- internals ---------------------------------------------------------------------------

    def _open(self) -> LocalFiles | FsspecFiles:
        if self._files is None:
            self._files = keys.open_files(self._location)
        return self._files

    def _open_entry(self, key: str) -> tuple[str, Any, int, object] | None:
        """(path, open file, size, identity) of the entry for `key`, or None if there is none."""
        keys.validate_key(key)
        files = self._open()
        path = files.join(keys.shard(key), key)
        try:
            return (path, *files.open_read(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ResultStoreError(f"Could not read result entry {key}: {exc}") from exc

    def _read_head(self, reader: _Reader, key: str, path: str) -> _Head:
        needed = _head_length(reader.fill(_PREAMBLE.size))
        return self._verified_head(reader.fill(needed), reader.size, key, self._open().url(path))

    def _verify_payload(self, reader: _Reader, head: _Head, key: str) -> None:
        """Check 3 of the trust policy: read the payload, chunk by chunk, hashing each chunk
        while it is still in the CPU's cache. The padding must be zeros."""
        mac = None if head.payload_mac is None else self._payload_mac(key)
        padding_start = head.length
        with ContentHasher(head.info.size) as hasher:
            for frame_start, length in head.frames:
                if reader.fill(frame_start)[padding_start:frame_start] != bytes(
                    frame_start - padding_start
                ):
                    raise _Rejected("non-zero padding", task_name=head.info.task_name)
                for start in range(frame_start, frame_start + length, _READ_CHUNK):
                    end = min(start + _READ_CHUNK, frame_start + length)
                    chunk = reader.fill(end)[start:end]
                    hasher.update(chunk)
                    if mac is not None:
                        mac.update(chunk)
                padding_start = frame_start + length
            checksum = hasher.hexdigest()
        if checksum != head.info.checksum:  # unkeyed, so no secret to leak through timing
            raise _Rejected("checksum mismatch", task_name=head.info.task_name)
        if mac is not None and not hmac.compare_digest(mac.digest(), head.payload_mac):
            raise _Rejected("payload MAC mismatch", task_name=head.info.task_name)

    def _payload_mac(self, key: str) -> hmac.HMAC:
        """The payload's HMAC, bound to the cache key and the format; the caller feeds it."""
        message = _PAYLOAD_MAC_PREFIX + struct.pack("<HH", FORMAT_VERSION, len(key)) + key.encode()
        return hmac.new(self._signing_key, message, "sha256")

    def _sign(self, key: str, header_bytes: bytes) -> bytes:
        message = b"dagrun-result-entry\x00" + struct.pack("<HH", FORMAT_VERSION, len(key))
        return hmac.new(self._signing_key, message + key.encode() + header_bytes, "sha256").digest()

    def _verified_head(self, head: memoryview, file_size: int, key: str, url: str) -> _Head:
        """Checks 1 and 2 of the trust policy, on the head alone."""
        magic, version, sig_length, header_length, digest = _PREAMBLE.unpack_from(head)
        start = _PREAMBLE.size + sig_length
        header_bytes = bytes(head[start : start + header_length])
        if len(header_bytes) < header_length:
            raise _Rejected("truncated header")
        if not hmac.compare_digest(digest, _header_digest(sig_length, header_bytes)):
            raise _Rejected("header checksum mismatch")
        try:
            header = json.loads(header_bytes)
            info = _entry_info(header, url)
            lengths = [int(length) for length in header["frames"]]
            if min(lengths, default=0) < 0 or sum(lengths) != info.size:
                raise ValueError("frame sizes do not add up")
        except (ValueError, KeyError, TypeError) as exc:
            raise _Rejected(f"unreadable header ({exc})") from None
        if info.key != key:
            raise _Rejected(f"the entry was written for key {info.key}, not this one",
                            task_name=info.task_name)
        if info.serializer not in STORED_SERIALIZERS:
            raise _Rejected(f"unknown serializer {info.serializer!r}", task_name=info.task_name)
        frames, expected = [], _aligned(start + header_length)
        for length in lengths:
            frame_start = _aligned(expected)
            frames.append((frame_start, length))
            expected = frame_start + length
        if file_size != expected:
            reason = "truncated" if file_size < expected else "trailing bytes"
            raise _Rejected(f"{reason}: {file_size} bytes, the header says {expected}",
                            task_name=info.task_name)
        payload_mac = None
        if self._signing_key is not None:
            signature = bytes(head[_PREAMBLE.size : start])
            if not signature:
                # Left in place, not quarantined: a reader with the wrong key (or none) must
                # not sweep a shared store into corrupt/. Such entries are never deserialized.
                raise _Rejected("unsigned entry, but a signing key is set",
                                task_name=info.task_name, quarantine=False)
            if not hmac.compare_digest(signature, self._sign(key, header_bytes)):
                raise _Rejected("bad signature", task_name=info.task_name, quarantine=False)
            mac_hex = header.get("payload_mac")
            if not isinstance(mac_hex, str) or _PAYLOAD_MAC_PATTERN.fullmatch(mac_hex) is None:
                raise _Rejected("signed entry without a payload MAC", task_name=info.task_name)
            payload_mac = bytes.fromhex(mac_hex)
        return _Head(info, start + header_length, frames, payload_mac)

    def _discard(self, key: str, path: str, identity: object, rejected: _Rejected) -> None:
        task = repr(rejected.task_name) if rejected.task_name else "unknown task"
        if not rejected.quarantine:
            logger.warning("Ignored result entry %s (%s): %s", key, task, rejected.reason)
            return
        files = self._open()
        aside = files.join(keys.CORRUPT_DIR, keys.corrupt_name(key))
        try:
            moved = files.move_aside(path, identity, aside)
        except OSError as exc:
            moved = False
            logger.warning("Could not move result entry %s aside: %s", key, exc)
        logger.warning(
            "Discarded result entry %s (%s): %s; %s", key, task, rejected.reason,
            f"moved to {files.url(aside)}" if moved else "left in place",
        )


def _head_length(prefix: memoryview | bytes) -> int:
    """Bytes up to the end of the header, from the preamble; rejects foreign files."""
    if len(prefix) < _PREAMBLE.size:
        raise _Rejected("truncated preamble")
    magic, version, sig_length, header_length, _ = _PREAMBLE.unpack_from(prefix)
    if magic != MAGIC:
        raise _Rejected("not a dagrun result entry")
    if version != FORMAT_VERSION:
        # Written by another dagrun version: not corrupt, just not ours to read.
        raise _Rejected(f"format version {version}, this dagrun reads {FORMAT_VERSION}",
                        quarantine=False)
    return _PREAMBLE.size + sig_length + header_length


def _header_digest(sig_length: int, header_bytes: bytes) -> bytes:
    lengths = struct.pack("<HHI", FORMAT_VERSION, sig_length, len(header_bytes))
    return hashlib.blake2b(lengths + header_bytes, digest_size=16, person=b"dagrun-header").digest()


def _entry_info(header: dict[str, Any], path: str) -> EntryInfo:
    expires_at = header["expires_at"]
    info = EntryInfo(
        key=header["key"], task_name=header["task_name"], serializer=header["serializer"],
        size=int(header["size"]), checksum=header["checksum"], created=float(header["created"]),
        expires_at=None if expires_at is None else float(expires_at), path=path,
    )
    texts = (info.key, info.task_name, info.serializer, info.checksum)
    if not all(isinstance(text, str) for text in texts):
        raise TypeError("header fields have the wrong types")
    return info


def _expired(info: EntryInfo) -> bool:
    return info.expires_at is not None and info.expires_at <= time.time()


class _Reader:
    """An open entry file, read into one buffer only as far as the caller has asked."""

    def __init__(self, file: Any, size: int, capacity: int) -> None:
        self.file = file
        self.size = size
        self.buffer = _allocate(capacity)
        self.filled = 0

    def fill(self, upto: int) -> memoryview:
        """The first `upto` bytes (fewer if the file is shorter), reading what is missing."""
        upto = min(upto, self.size)
        if upto > len(self.buffer):  # only a header larger than the first guess gets here
            grown = _allocate(upto)
            grown[: self.filled] = self.buffer[: self.filled]
            self.buffer = grown
        while self.filled < upto:
            count = self.file.readinto(self.buffer[self.filled : upto])
            if not count:
                raise _Rejected("truncated while being read")
            self.filled += count
        return self.buffer[: self.filled]


def _allocate(size: int) -> memoryview:
    """A writable buffer for the first `size` bytes of a file, page aligned: offset k of the file
    lands at an address equal to k modulo the page size (see the module docstring)."""
    # Faulting in 256 MiB of fresh 4 KiB pages costs more than copying them from the page
    # cache; numpy's allocator asks for huge pages. Used only when numpy is already loaded.
    numpy = sys.modules.get("numpy")
    if numpy is not None and size >= 1 << 20:
        array = numpy.empty(size + _PAGE_SIZE, dtype=numpy.uint8)
        start = -array.ctypes.data % _PAGE_SIZE
        return memoryview(array[start : start + size])
    # Small buffers: the copy's speed hardly matters, only that frames come out aligned.
    raw = bytearray(size + FRAME_ALIGNMENT)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(raw)) % FRAME_ALIGNMENT
    return memoryview(raw)[start : start + size]


def _aligned(offset: int) -> int:
    """The first multiple of FRAME_ALIGNMENT at or after `offset`."""
    return -(-offset // FRAME_ALIGNMENT) * FRAME_ALIGNMENT


def _padded(head: bytes) -> bytes:
    return head + bytes(_aligned(len(head)) - len(head))


def _absolute_local(location: str) -> str:
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location or "::" in location:
        return location  # an fsspec URL, resolved lazily by the process that uses it
    return os.path.abspath(os.path.expanduser(location))
