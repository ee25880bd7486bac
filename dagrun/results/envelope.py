"""The bytes of a result-store entry: how one is laid out, written, and verified.

An entry is one file, an envelope:

    offset 0   preamble  "DAGRUNRS", format version (u16), signature length (u16),
                         header length (u32), BLAKE2b-128 of (those lengths + header)
               signature HMAC-SHA256(signing key, version + cache key + header), when signed
               header    JSON: format, key, task_name, serializer, size, frames, checksum,
                         created, expires_at, and payload_mac when signed
               payload   the serializer's frames, each starting at a multiple of 64 bytes
                         (zero bytes pad the head and each frame up to the next one)

Two hashes of the payload, for two different threats:
- `checksum`, XXH3-128 (`dagrun.content_hashing.content_hash`), always: catches corruption (a flipped
  byte, a torn write). It is fast and unkeyed, so it is no defence against an attacker, who can
  recompute it or craft another payload with the same checksum.
- `payload_mac`, HMAC-SHA256(signing key, "dagrun-result-payload" + version + cache key +
  payload), when a signing key is set: catches tampering. It is in the header, which the
  signature covers, so a valid signature vouches for the payload through it.

Trust policy, in the order the store applies it; nothing is deserialized before all of it passes:
1. The preamble and header digest are intact and the file is exactly as long as they say
   (truncation), and the header names the requested key (an entry copied to another key).
2. With a signing key, the header's signature verifies for *this* cache key; an entry written
   or copied by someone without the key is refused. Without a key, signatures and MACs are
   ignored. (`read_head` checks 1 and 2, on the head alone.)
3. The payload's checksum equals the header's, the padding is zeros, and with a signing key
   the payload's HMAC equals the header's `payload_mac` (compared in constant time).
A failed check raises `Rejected`; what to do with the entry is the store's decision.

Reads go into one buffer, laid out like the file and page aligned, and the values are rebuilt
over slices of it (pickle protocol 5 buffers): no copies. The alignment is for speed: the
kernel copies from the page cache much faster into a buffer aligned like the file, and a numpy
array rebuilt over a 64-byte aligned frame is aligned too (an unaligned one computes slowly).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import re
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagrun.content_hashing import ContentHasher
from dagrun.results.serializers import STORED_SERIALIZERS, Frame

MAGIC = b"DAGRUNRS"
# 2: XXH3-128 checksum, payload_mac, 64-byte aligned frames (1: BLAKE2b tree checksum, packed)
FORMAT_VERSION = 2
_PREAMBLE = struct.Struct("<8sHHI16s")
# The payload is read and hashed in chunks: large enough that an uncached file is read in big
# requests, small enough that each chunk is hashed while still in the CPU's cache.
_READ_CHUNK = 8 << 20
_FIRST_READ = 1 << 20  # a read of an entry starts with up to this much: all of a small one
FRAME_ALIGNMENT = 64  # a cache line; numpy wants 16 at most
_PAGE_SIZE = 4096
_PAYLOAD_MAC_PREFIX = b"dagrun-result-payload\x00"
_PAYLOAD_MAC_PATTERN = re.compile(r"[0-9a-f]{64}")


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


class Rejected(Exception):
    """An entry failed verification; `quarantine` says whether to move it aside."""

    def __init__(self, reason: str, *, task_name: str | None = None, quarantine: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.task_name = task_name
        self.quarantine = quarantine


@dataclass(frozen=True, slots=True)
class Head:
    info: EntryInfo
    length: int  # of the head: preamble, signature and header
    frames: list[tuple[int, int]]  # (offset in the file, length) of each payload frame
    payload_mac: bytes | None  # the header's, verified by the signature; None when unsigned


# --- writing -------------------------------------------------------------------------------------


def encode(
    key: str,
    task_name: str,
    serializer: str,
    frames: Sequence[Frame],
    expires_at: float | None,
    signing_key: bytes | None,
) -> tuple[dict[str, Any], list[bytes | memoryview]]:
    """(header, chunks) of an entry: the chunks, back to back, are the file's bytes.

    The payload is hashed (and MACed) once, before anything is written, so the head can be
    written first and the frames after it without being copied."""
    views = [memoryview(frame).cast("B") for frame in frames]
    sizes = [view.nbytes for view in views]
    with ContentHasher(sum(sizes)) as hasher:
        for view in views:
            hasher.update(view)
        checksum = hasher.hexdigest()
    header = {
        "format": FORMAT_VERSION, "key": key, "task_name": task_name, "serializer": serializer,
        "size": sum(sizes), "frames": sizes, "checksum": checksum, "created": time.time(),
        "expires_at": None if expires_at is None else float(expires_at),
    }
    if signing_key is not None:
        mac = _payload_mac(signing_key, key)
        for view in views:
            mac.update(view)
        header["payload_mac"] = mac.hexdigest()
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    signature = _sign(signing_key, key, header_bytes) if signing_key is not None else b""
    preamble = _PREAMBLE.pack(
        MAGIC, FORMAT_VERSION, len(signature), len(header_bytes),
        _header_digest(len(signature), header_bytes),
    )
    head = _padded(preamble + signature + header_bytes)
    chunks: list[bytes | memoryview] = [head]
    end = len(head)
    for view in views:  # each frame starts at the next multiple of FRAME_ALIGNMENT
        if end != _aligned(end):
            chunks.append(memoryview(bytes(_aligned(end) - end)))
            end = _aligned(end)
        chunks.append(view)
        end += view.nbytes
    return header, chunks


# --- reading -------------------------------------------------------------------------------------


def read_head(reader: Reader, key: str, url: str, signing_key: bytes | None) -> Head:
    """Checks 1 and 2 of the trust policy: read the head and verify it.

    The first read takes what the caller's buffer holds, up to `_FIRST_READ`, so a small entry
    (and the head of any) comes in one system call rather than one per part; a large payload
    is still read chunk by chunk as it is hashed (`verify_payload`)."""
    needed = _head_length(reader.fill(max(_PREAMBLE.size, min(len(reader.buffer), _FIRST_READ))))
    return _verified_head(reader.fill(needed), reader.size, key, url, signing_key)


def verify_payload(reader: Reader, head: Head, key: str, signing_key: bytes | None) -> None:
    """Check 3 of the trust policy: read the payload, chunk by chunk, hashing each chunk
    while it is still in the CPU's cache. The padding must be zeros."""
    mac = None if head.payload_mac is None else _payload_mac(signing_key, key)
    padding_start = head.length
    with ContentHasher(head.info.size) as hasher:
        for frame_start, length in head.frames:
            if reader.fill(frame_start)[padding_start:frame_start] != bytes(
                frame_start - padding_start
            ):
                raise Rejected("non-zero padding", task_name=head.info.task_name)
            for start in range(frame_start, frame_start + length, _READ_CHUNK):
                end = min(start + _READ_CHUNK, frame_start + length)
                chunk = reader.fill(end)[start:end]
                hasher.update(chunk)
                if mac is not None:
                    mac.update(chunk)
            padding_start = frame_start + length
        checksum = hasher.hexdigest()
    if checksum != head.info.checksum:  # unkeyed, so no secret to leak through timing
        raise Rejected("checksum mismatch", task_name=head.info.task_name)
    if mac is not None and not hmac.compare_digest(mac.digest(), head.payload_mac):
        raise Rejected("payload MAC mismatch", task_name=head.info.task_name)


def entry_info(header: dict[str, Any], path: str) -> EntryInfo:
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


class Reader:
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
                raise Rejected("truncated while being read")
            self.filled += count
        return self.buffer[: self.filled]


# --- internals -----------------------------------------------------------------------------------


def _payload_mac(signing_key: bytes, key: str) -> hmac.HMAC:
    """The payload's HMAC, bound to the cache key and the format; the caller feeds it."""
    message = _PAYLOAD_MAC_PREFIX + struct.pack("<HH", FORMAT_VERSION, len(key)) + key.encode()
    return hmac.new(signing_key, message, "sha256")


def _sign(signing_key: bytes, key: str, header_bytes: bytes) -> bytes:
    message = b"dagrun-result-entry\x00" + struct.pack("<HH", FORMAT_VERSION, len(key))
    return hmac.new(signing_key, message + key.encode() + header_bytes, "sha256").digest()


def _verified_head(
    head: memoryview, file_size: int, key: str, url: str, signing_key: bytes | None
) -> Head:
    """Checks 1 and 2 of the trust policy, on the head alone (its preamble already checked)."""
    _, _, sig_length, header_length, digest = _PREAMBLE.unpack_from(head)
    start = _PREAMBLE.size + sig_length
    header_bytes = bytes(head[start : start + header_length])
    if len(header_bytes) < header_length:
        raise Rejected("truncated header")
    if not hmac.compare_digest(digest, _header_digest(sig_length, header_bytes)):
        raise Rejected("header checksum mismatch")
    try:
        header = json.loads(header_bytes)
        info = entry_info(header, url)
        lengths = [int(length) for length in header["frames"]]
        if min(lengths, default=0) < 0 or sum(lengths) != info.size:
            raise ValueError("frame sizes do not add up")
    except (ValueError, KeyError, TypeError) as exc:
        raise Rejected(f"unreadable header ({exc})") from None
    if info.key != key:
        raise Rejected(f"the entry was written for key {info.key}, not this one",
                       task_name=info.task_name)
    if info.serializer not in STORED_SERIALIZERS:
        raise Rejected(f"unknown serializer {info.serializer!r}", task_name=info.task_name)
    frames, expected = [], _aligned(start + header_length)
    for length in lengths:
        frame_start = _aligned(expected)
        frames.append((frame_start, length))
        expected = frame_start + length
    if file_size != expected:
        reason = "truncated" if file_size < expected else "trailing bytes"
        raise Rejected(f"{reason}: {file_size} bytes, the header says {expected}",
                       task_name=info.task_name)
    payload_mac = None
    if signing_key is not None:
        signature = bytes(head[_PREAMBLE.size : start])
        if not signature:
            # Left in place, not quarantined: a reader with the wrong key (or none) must
            # not sweep a shared store into corrupt/. Such entries are never deserialized.
            raise Rejected("unsigned entry, but a signing key is set",
                           task_name=info.task_name, quarantine=False)
        if not hmac.compare_digest(signature, _sign(signing_key, key, header_bytes)):
            raise Rejected("bad signature", task_name=info.task_name, quarantine=False)
        mac_hex = header.get("payload_mac")
        if not isinstance(mac_hex, str) or _PAYLOAD_MAC_PATTERN.fullmatch(mac_hex) is None:
            raise Rejected("signed entry without a payload MAC", task_name=info.task_name)
        payload_mac = bytes.fromhex(mac_hex)
    return Head(info, start + header_length, frames, payload_mac)


def _head_length(prefix: memoryview | bytes) -> int:
    """Bytes up to the end of the header, from the preamble; rejects foreign files."""
    if len(prefix) < _PREAMBLE.size:
        raise Rejected("truncated preamble")
    magic, version, sig_length, header_length, _ = _PREAMBLE.unpack_from(prefix)
    if magic != MAGIC:
        raise Rejected("not a dagrun result entry")
    if version != FORMAT_VERSION:
        # Written by another dagrun version: not corrupt, just not ours to read.
        raise Rejected(f"format version {version}, this dagrun reads {FORMAT_VERSION}",
                       quarantine=False)
    return _PREAMBLE.size + sig_length + header_length


def _header_digest(sig_length: int, header_bytes: bytes) -> bytes:
    lengths = struct.pack("<HHI", FORMAT_VERSION, sig_length, len(header_bytes))
    return hashlib.blake2b(lengths + header_bytes, digest_size=16, person=b"dagrun-header").digest()


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
