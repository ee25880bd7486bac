"""Behaviour of the result store on real files: round trips, integrity, signing, atomic writes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import multiprocessing
import os
import pickle
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from real_parts import require_part

from dagrun.errors import ConfigError, ResultStoreError, SerializationError
from dagrun.content_hashing import content_hash
from dagrun.hashing import hash_struct
from dagrun.results import CacheMiss, EntryInfo, ResultStore, envelope
from dagrun.results import store as store_module
from dagrun.results.serializers import dumps, loads

SIGNING_KEY = b"0123456789abcdef-test-signing-key"


def make_key(*parts: object) -> str:
    return hash_struct(["TestKey", *map(str, parts)])


def entry_file(store: ResultStore, key: str) -> Path:
    info = store.info(key)
    assert info is not None
    return Path(info.path)


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "results")


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, True, 3, -2**63, 2.5, "text", b"\x00bytes", [1, [2, None]], {"a": {"b": [1.5, "x"]}},
     {1: "int keys", None: "and None"}, []],
)
def test_plain_data_round_trips_through_msgpack(store: ResultStore, value: object) -> None:
    key = make_key("plain", repr(value))
    info = store.put(key, value, task_name="extract")
    assert info.serializer == "msgpack"
    assert store.get(key) == value


@pytest.mark.parametrize(
    "value",
    [(1, 2), {"t": (1,)}, bytearray(b"ab"), OrderedDict(a=1), {1, 2}, 2**80, complex(1, 2)],
)
def test_values_msgpack_would_change_fall_back_to_cloudpickle(
    store: ResultStore, value: object
) -> None:
    key = make_key("pickled", repr(value))
    assert store.put(key, value, task_name="t").serializer == "cloudpickle"
    loaded = store.get(key)
    assert loaded == value and type(loaded) is type(value)


def test_explicit_msgpack_refuses_a_tuple_naming_its_type(store: ResultStore) -> None:
    with pytest.raises(SerializationError, match=r"task 'extract'.*tuple"):
        store.put(make_key("t"), (1, 2), task_name="extract", serializer="msgpack")


def test_unknown_serializer_names_the_accepted_ones(store: ResultStore) -> None:
    with pytest.raises(ConfigError, match="'auto', 'msgpack', 'cloudpickle'"):
        store.put(make_key("s"), 1, task_name="t", serializer="json")
    with pytest.raises(ConfigError, match="msgpack"):
        loads("yaml", [b""])


def test_unpicklable_value_is_a_serialization_error_naming_task_and_type(
    store: ResultStore, tmp_path: Path
) -> None:
    with pytest.raises(SerializationError, match=r"task 'load'.*lock"):
        store.put(make_key("lock"), {"lock": threading.Lock()}, task_name="load")
    assert files_under(tmp_path) == []


def test_numpy_array_round_trips_out_of_band_and_writable(store: ResultStore) -> None:
    array = np.random.default_rng(1).random((512, 256))
    serializer, frames = dumps({"a": array, "b": array[::2]}, "auto")
    assert serializer == "cloudpickle" and len(frames) >= 2  # the data is a frame of its own
    key = make_key("array")
    info = store.put(key, {"a": array, "b": array[::2]}, task_name="matrix")
    assert info.size == sum(memoryview(frame).nbytes for frame in frames)
    loaded = store.get(key)
    np.testing.assert_array_equal(loaded["a"], array)
    np.testing.assert_array_equal(loaded["b"], array[::2])
    assert loaded["a"].flags.writeable
    # Frames are 64-byte aligned in the file and the read buffer is aligned like the file, so
    # arrays rebuilt over it are aligned (numpy computes slowly on unaligned data).
    assert loaded["a"].flags.aligned and loaded["a"].ctypes.data % 64 == 0


def test_large_arrays_load_aligned_without_a_copy(store: ResultStore) -> None:
    key = make_key("large-array")
    array = np.arange(3 * 2**20 + 3, dtype=np.float64)  # 24 MiB, uneven: the big-buffer path
    store.put(key, [b"odd length prefix", array], task_name="t")
    loaded = store.get(key)[1]
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.aligned and loaded.ctypes.data % 64 == 0 and loaded.flags.writeable
    assert loaded.base is not None  # a view of the read buffer, not a copy


def test_entry_info_and_checksum_match_content_hash(store: ResultStore) -> None:
    key = make_key("info")
    before = time.time()
    info = store.put(key, [1, 2, 3], task_name="transform")
    assert isinstance(info, EntryInfo)
    assert (info.key, info.task_name, info.serializer) == (key, "transform", "msgpack")
    assert before <= info.created <= time.time() and info.expires_at is None
    assert info.checksum == content_hash(dumps([1, 2, 3])[1][0]) and len(info.checksum) == 32
    assert store.lookup(key) == info == store.info(key)
    assert Path(info.path).name == key


def test_memory_url_round_trip_and_cheap_pickle() -> None:
    # Signed: without a key, pickled entries of an fsspec store are not loaded (see below).
    store = ResultStore(f"memory://dagrun-test-{uuid.uuid4().hex}", signing_key=SIGNING_KEY)
    key = make_key("memory")
    store.put(key, {"x": np.arange(10)}, task_name="remote")
    assert store.info(key).path.startswith("memory://")
    shipped = pickle.dumps(store)
    assert len(shipped) < 400 and b"MemoryFileSystem" not in shipped
    np.testing.assert_array_equal(pickle.loads(shipped).get(key)["x"], np.arange(10))
    assert [info.key for info in store.entries()] == [key]
    assert store.clear() == 1 and store.lookup(key) is None


def test_store_pickles_without_its_filesystem(store: ResultStore) -> None:
    store.put(make_key("p"), 1, task_name="t")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.location == store.location and clone.get(make_key("p")) == 1


def test_from_env_reads_location_and_signing_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DAGRUN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGRUN_RESULTS", raising=False)
    monkeypatch.delenv("DAGRUN_RESULTS_KEY", raising=False)
    assert ResultStore.from_env().location == str(tmp_path / "home" / "results")
    monkeypatch.setenv("DAGRUN_RESULTS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("DAGRUN_RESULTS_KEY", SIGNING_KEY.decode())
    store = ResultStore.from_env()
    assert store.location == str(tmp_path / "elsewhere") and "signed=True" in repr(store)
    assert ResultStore.from_env("memory://x").location == "memory://x"
    monkeypatch.setenv("DAGRUN_RESULTS_KEY", "short")
    with pytest.raises(ConfigError, match="DAGRUN_RESULTS_KEY"):
        ResultStore.from_env()


# --- integrity -------------------------------------------------------------------------------


def corrupt_dir(store: ResultStore) -> Path:
    return Path(store.location) / "corrupt"


@pytest.mark.parametrize("where", ["payload", "header", "preamble"])
def test_a_flipped_byte_is_never_returned(store: ResultStore, caplog, where: str) -> None:
    key = make_key("flip", where)
    store.put(key, np.arange(100_000), task_name="extract")
    path = entry_file(store, key)
    data = bytearray(path.read_bytes())
    # (not the version field: an unknown version is a newer format, ignored but kept)
    position = {"payload": len(data) - 1000, "header": 40, "preamble": 14}[where]
    data[position] ^= 0x01
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="dagrun.results"), pytest.raises(CacheMiss):
        store.get(key)
    assert "Discarded result entry" in caplog.text and key in caplog.text
    assert not path.exists() and len(list(corrupt_dir(store).iterdir())) == 1
    assert store.lookup(key) is None


def test_non_zero_padding_between_frames_is_rejected(store: ResultStore) -> None:
    key = make_key("padding")
    store.put(key, np.arange(100_000), task_name="extract")
    path = entry_file(store, key)
    data = bytearray(path.read_bytes())
    _, header, _ = split_entry(bytes(data))
    stream_end = len(data) - header["frames"][1] - (-header["frames"][0] % 64)
    assert len(header["frames"]) == 2 and header["frames"][0] % 64  # there is padding
    data[stream_end] = 1
    path.write_bytes(data)
    with pytest.raises(CacheMiss, match="non-zero padding"):
        store.get(key)


def test_a_truncated_file_is_never_returned(store: ResultStore, caplog) -> None:
    key = make_key("truncated")
    store.put(key, np.arange(100_000), task_name="extract")
    path = entry_file(store, key)
    path.write_bytes(path.read_bytes()[:-1])
    # lookup reads only the header, yet sees the size does not add up
    with caplog.at_level(logging.WARNING, logger="dagrun.results"):
        assert store.lookup(key) is None
    assert "truncated" in caplog.text and not path.exists()

    store.put(key, [1, 2], task_name="extract")
    path.write_bytes(path.read_bytes()[:20])  # cut inside the preamble
    with pytest.raises(CacheMiss, match="truncated"):
        store.get(key)


def test_an_entry_of_an_unknown_format_version_is_ignored_but_kept(
    store: ResultStore, caplog
) -> None:
    key = make_key("future-format")
    store.put(key, 1, task_name="t")
    path = entry_file(store, key)
    data = bytearray(path.read_bytes())
    data[8] = 99  # the format version: a newer dagrun wrote this, it is not corrupt
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="dagrun.results"), pytest.raises(CacheMiss):
        store.get(key)
    assert "format version 99" in caplog.text
    assert path.exists() and not corrupt_dir(store).exists()


def test_a_head_larger_than_the_first_read_is_read_whole(store: ResultStore, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "_HEAD_READ_GUESS", 40)
    key = make_key("long-head")
    info = store.put(key, {"x": 1}, task_name="a-task-name-" + "n" * 200)
    assert store.lookup(key) == info and store.get(key) == {"x": 1}


def test_header_payload_mismatch_is_rejected(store: ResultStore) -> None:
    # Swap the payloads of two valid entries of equal size: each header checks out on its own.
    first, second = make_key("first"), make_key("second")
    store.put(first, [1, 2, 3], task_name="t")
    store.put(second, [4, 5, 6], task_name="t")
    first_path, second_path = entry_file(store, first), entry_file(store, second)
    first_data, second_data = first_path.read_bytes(), second_path.read_bytes()
    first_path.write_bytes(first_data[:-4] + second_data[-4:])
    with pytest.raises(CacheMiss, match="checksum mismatch"):
        store.get(first)


def test_a_half_written_temp_file_is_ignored_and_cleared_when_stale(store: ResultStore) -> None:
    key = make_key("temp")
    info = store.put(key, "complete", task_name="t")
    shard = Path(info.path).parent
    full = Path(info.path).read_bytes()
    stale = shard / f".tmp-{key}-crashed"
    stale.write_bytes(full[: len(full) // 2])
    fresh = shard / f".tmp-{key}-inflight"
    fresh.write_bytes(full[:10])
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))

    assert store.get(key) == "complete"
    assert [entry.key for entry in store.entries()] == [key]
    Path(info.path).unlink()  # only the temp files remain: still no entry
    assert store.lookup(key) is None and list(store.entries()) == []
    with pytest.raises(CacheMiss, match="no entry"):
        store.get(key)
    assert store.clear() == 0
    assert not stale.exists() and fresh.exists()  # a young temp file may be a write in progress


def test_an_entry_copied_to_another_key_is_rejected(store: ResultStore) -> None:
    original, other = make_key("original"), make_key("other")
    store.put(original, "value for original", task_name="t")
    target = Path(store.location) / other[:2] / other
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(entry_file(store, original), target)
    assert store.lookup(other) is None
    shutil.copy(entry_file(store, original), target)
    with pytest.raises(CacheMiss, match="written for key"):
        store.get(other)
    assert store.get(original) == "value for original"


# --- signing ---------------------------------------------------------------------------------


def trip_sentinel(path: str) -> str:
    """Called only if the malicious payload below is unpickled."""
    Path(path).write_text("unpickled")
    return "pwned"


class Sentinel:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (trip_sentinel, (self.path,))


def split_entry(data: bytes) -> tuple[bytes, dict, bytes]:
    """(signature, header, body) of an entry file; the body is the frames and their padding."""
    _, _, sig_length, header_length, _ = envelope._PREAMBLE.unpack_from(data)
    start = envelope._PREAMBLE.size + sig_length
    header = json.loads(data[start : start + header_length])
    body_start = -(-(start + header_length) // 64) * 64  # the head is padded to 64 bytes
    return data[envelope._PREAMBLE.size : start], header, data[body_start:]


def build_entry(signature: bytes, header: dict, body: bytes) -> bytes:
    """An entry file from its parts, with the (unkeyed) header digest anyone can recompute."""
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    preamble = envelope._PREAMBLE.pack(
        envelope.MAGIC, envelope.FORMAT_VERSION, len(signature), len(header_bytes),
        envelope._header_digest(len(signature), header_bytes),
    )
    head = preamble + signature + header_bytes
    return head + bytes(-len(head) % 64) + body


def splice_signature(signed: bytes, unsigned: bytes) -> bytes:
    """`unsigned`'s header and payload under `signed`'s signature, with a valid header digest."""
    return build_entry(split_entry(signed)[0], *split_entry(unsigned)[1:])


def test_tampered_entry_is_rejected_before_unpickling(tmp_path: Path, caplog) -> None:
    location = tmp_path / "shared"
    trusted = ResultStore(location, signing_key=SIGNING_KEY)
    attacker = ResultStore(location)  # can write to the shared storage, lacks the key
    key = make_key("tampered")
    trusted.put(key, "honest", task_name="extract")
    assert trusted.get(key) == "honest"
    flag = tmp_path / "sentinel"

    attacker.put(key, Sentinel(flag), task_name="extract")  # a well-formed, unsigned entry
    with caplog.at_level(logging.WARNING, logger="dagrun.results"), pytest.raises(CacheMiss):
        trusted.get(key)
    assert "unsigned entry" in caplog.text
    assert not flag.exists()

    forger = ResultStore(location, signing_key=b"not-the-right-key-at-all")
    forger.put(key, Sentinel(flag), task_name="extract")
    assert trusted.lookup(key) is None  # header-only checks include the signature
    forger.put(key, Sentinel(flag), task_name="extract")
    with pytest.raises(CacheMiss, match="bad signature"):
        trusted.get(key)
    assert not flag.exists()

    # Tampering in place: the malicious payload with a consistent header, under the honest
    # entry's signature (everything but the signature can be recomputed without the key).
    trusted.put(key, "honest", task_name="extract")
    honest = entry_file(trusted, key).read_bytes()
    attacker.put(key, Sentinel(flag), task_name="extract")
    path = entry_file(attacker, key)
    path.write_bytes(splice_signature(honest, path.read_bytes()))
    with pytest.raises(CacheMiss, match="bad signature"):
        trusted.get(key)
    assert not flag.exists()

    # The sentinel is live: a store that does unpickle it trips the flag.
    attacker.put(key, Sentinel(flag), task_name="extract")
    assert attacker.get(key) == "pwned" and flag.exists()


def test_signature_is_bound_to_the_key(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r", signing_key=SIGNING_KEY)
    original, other = make_key("signed-original"), make_key("signed-other")
    store.put(original, 1, task_name="t")
    assert store.get(original) == 1
    data = entry_file(store, original).read_bytes()
    # Rewrite the header's key (same length) and fix the unkeyed header digest: only the
    # signature, which is keyed on the cache key, can still tell.
    magic, version, sig_length, header_length, _ = envelope._PREAMBLE.unpack_from(data)
    start = envelope._PREAMBLE.size + sig_length
    header = data[start : start + header_length].replace(original.encode(), other.encode())
    preamble = envelope._PREAMBLE.pack(
        magic, version, sig_length, header_length, envelope._header_digest(sig_length, header)
    )
    signature = data[envelope._PREAMBLE.size : start]
    forged = preamble + signature + header + data[start + header_length :]
    target = Path(store.location) / other[:2] / other
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(forged)
    with pytest.raises(CacheMiss, match="bad signature"):
        store.get(other)
    assert ResultStore(tmp_path / "r").get(original) == 1  # no key configured: checksum suffices


def test_signed_entries_carry_a_payload_mac_bound_to_the_key(tmp_path: Path) -> None:
    signed = ResultStore(tmp_path / "signed", signing_key=SIGNING_KEY)
    unsigned = ResultStore(tmp_path / "unsigned")
    key = make_key("mac")
    for store in (signed, unsigned):
        store.put(key, {"x": 1}, task_name="t")
    signature, header, payload = split_entry(entry_file(signed, key).read_bytes())
    assert len(signature) == 32 and header["checksum"] == content_hash(payload)
    message = (b"dagrun-result-payload\x00" + (2).to_bytes(2, "little")
               + len(key).to_bytes(2, "little") + key.encode() + payload)
    assert header["payload_mac"] == hmac.new(SIGNING_KEY, message, hashlib.sha256).hexdigest()
    signature, header, _ = split_entry(entry_file(unsigned, key).read_bytes())
    assert signature == b"" and "payload_mac" not in header
    assert signed.get(key) == unsigned.get(key) == {"x": 1}


# --- pickles from stores that others can write ------------------------------------------------

REFUSAL = (
    "Not loading pickled results from the result store {location}: {why}, so whoever can "
    "write there could run code here; set DAGRUN_RESULTS_KEY (a secret shared by its users) "
    "to sign entries, or DAGRUN_RESULTS_TRUST_PICKLE=1 to trust everyone who can write it"
)


@pytest.fixture
def fresh_refusal_warnings(monkeypatch):
    """Each test sees the once-per-process refusal warning afresh."""
    monkeypatch.setattr(store_module, "_warned_refusals", set())


def shared_directory(tmp_path: Path, mode: int) -> Path:
    root = tmp_path / f"shared-{mode:o}"
    root.mkdir()
    root.chmod(mode)
    return root


@pytest.mark.parametrize(
    "where", ["group-writable directory", "world-writable directory", "memory"]
)
def test_a_store_others_can_write_refuses_pickles_without_a_key(
    tmp_path: Path, caplog, fresh_refusal_warnings, monkeypatch, where: str
) -> None:
    if where == "memory":
        location = f"memory://dagrun-shared-{uuid.uuid4().hex}"
        why = "it is an fsspec store, whose writers dagrun cannot check"
    else:
        mode = 0o770 if where.startswith("group") else 0o777
        root = shared_directory(tmp_path, mode)
        location, why = str(root), f"the directory {root} is group- or world-writable (mode {mode:04o})"
    writer = ResultStore(location)  # anyone who can write there, without a key
    pickled, plain = make_key("pickled"), make_key("plain")
    flag = tmp_path / "sentinel"
    writer.put(pickled, Sentinel(flag), task_name="extract")
    writer.put(plain, {"rows": [1, 2]}, task_name="load")

    reader = ResultStore(location)
    with caplog.at_level(logging.WARNING, logger="dagrun.results"):
        assert reader.get(plain) == {"rows": [1, 2]}  # msgpack: loading it runs no code
        assert reader.lookup(plain) is not None
        with pytest.raises(CacheMiss, match="pickled entry in a store others can write"):
            reader.get(pickled)
        assert reader.lookup(pickled) is None
        with pytest.raises(CacheMiss):
            reader.get(pickled)
    assert not flag.exists()
    assert [record.getMessage() for record in caplog.records] == [
        REFUSAL.format(location=location, why=why)
    ]
    assert reader.info(pickled) is not None  # left in place for readers who may trust it

    # An explicit opt-in, in the store or from the environment (also on workers: it pickles).
    monkeypatch.setenv("DAGRUN_RESULTS_TRUST_PICKLE", "1")
    trusting = pickle.loads(pickle.dumps(ResultStore.from_env(location)))
    assert trusting.get(pickled) == "pwned" and flag.exists()
    flag.unlink()

    # With a key, signed entries load: a writer without the key cannot forge them.
    signed = ResultStore(location, signing_key=SIGNING_KEY)
    signed.put(pickled, (1, "tuple"), task_name="extract")
    assert signed.get(pickled) == (1, "tuple")


def test_a_private_store_of_this_user_loads_pickles_without_a_key(
    tmp_path: Path, caplog, fresh_refusal_warnings
) -> None:
    root = tmp_path / "mine"
    store = ResultStore(root)
    key = make_key("mine")
    store.put(key, (1, 2), task_name="t")
    assert stat_mode(root) == 0o700
    with caplog.at_level(logging.WARNING, logger="dagrun.results"):
        assert store.get(key) == (1, 2)
    assert caplog.records == []


@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true",
                    reason="giving a file to another user needs root")
def test_an_entry_owned_by_another_user_is_not_unpickled(
    tmp_path: Path, caplog, fresh_refusal_warnings
) -> None:
    store = ResultStore(tmp_path / "results")
    key = make_key("foreign")
    flag = tmp_path / "sentinel"
    store.put(key, Sentinel(flag), task_name="t")
    os.chown(entry_file(store, key), 4242, 4242)
    with caplog.at_level(logging.WARNING, logger="dagrun.results"), pytest.raises(CacheMiss):
        store.get(key)
    assert not flag.exists()
    assert "is owned by another user (uid 4242)" in caplog.text


CACHED_FLOWS = """
from dagrun import flow, task

@task(cache=True)
def double(x: int) -> int:
    return 2 * x

@task(cache=True)
def pair(x: int) -> tuple:
    return (x, x)  # a tuple: a pickled entry

@flow(name="pipeline")
def pipeline(x: int = 1):
    return [double(x), pair(x)]
"""


def test_dagrun_run_on_a_group_writable_store_reuses_only_msgpack_entries_without_a_key(
    tmp_path: Path,
) -> None:
    dagrun = shutil.which("dagrun")
    assert dagrun, "the dagrun console script is not installed"
    (tmp_path / "flows.py").write_text(CACHED_FLOWS)
    root = shared_directory(tmp_path, 0o770)
    env = {**os.environ, "DAGRUN_RESULTS": str(root)}
    env.pop("DAGRUN_RESULTS_KEY", None)
    env.pop("DAGRUN_RESULTS_TRUST_PICKLE", None)

    def run(**extra: str) -> list[str]:
        result = subprocess.run(
            [dagrun, "run", "flows.py:pipeline", "-p", "x=5"], cwd=tmp_path, env={**env, **extra},
            capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr.splitlines()

    def cached(lines: list[str]) -> list[str]:
        return sorted(re.findall(r"Cached '(\w+)'", "\n".join(lines)))

    assert cached(run()) == []
    second = run()
    assert cached(second) == ["double"]  # the pickled entry of 'pair' is recomputed
    why = f"the directory {root} is group- or world-writable (mode 0770)"
    assert second.count(REFUSAL.format(location=root, why=why)) == 1
    keyed = {"DAGRUN_RESULTS_KEY": SIGNING_KEY.decode()}
    run(**keyed)  # unsigned entries are not trusted with a key set: both are rewritten, signed
    signed = run(**keyed)
    assert cached(signed) == ["double", "pair"]
    assert not any("Not loading" in line for line in signed)


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_a_payload_with_a_recomputed_checksum_is_rejected_when_signed(tmp_path: Path) -> None:
    # The checksum is unkeyed: an attacker who swaps the payload simply recomputes it. Only the
    # signature over the header (which holds the checksum and the payload MAC) can tell.
    location = tmp_path / "shared"
    trusted = ResultStore(location, signing_key=SIGNING_KEY)
    key = make_key("recomputed-checksum")
    trusted.put(key, "honest", task_name="extract")
    path = entry_file(trusted, key)
    signature, header, _ = split_entry(path.read_bytes())
    flag = tmp_path / "sentinel"
    _, frames = dumps(Sentinel(flag), "cloudpickle")
    malicious = b"".join(bytes(frame) for frame in frames)
    header.update(serializer="cloudpickle", size=len(malicious),
                  frames=[len(bytes(frame)) for frame in frames], checksum=content_hash(malicious))
    forged = build_entry(signature, header, malicious)
    path.write_bytes(forged)
    with pytest.raises(CacheMiss, match="bad signature"):
        trusted.get(key)
    assert not flag.exists()

    path.write_bytes(forged)  # the forgery is live: a store without the key loads it
    assert ResultStore(location).get(key) == "pwned" and flag.exists()


class ConstantHasher:
    """A stand-in checksum under which every payload collides, as a crafted one would."""

    def __init__(self, size: int) -> None:
        pass

    def __enter__(self) -> ConstantHasher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def update(self, data: object) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 32


def test_a_checksum_collision_is_caught_by_the_payload_mac(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    # XXH3 collisions can be crafted; simulate one, so the header (and its signature) stays
    # valid for a different payload. The payload MAC must refuse it before unpickling.
    monkeypatch.setattr(envelope, "ContentHasher", ConstantHasher)
    location = tmp_path / "shared"
    trusted = ResultStore(location, signing_key=SIGNING_KEY)
    key = make_key("collision")
    flag = tmp_path / "sentinel"
    _, frames = dumps(Sentinel(flag), "cloudpickle")
    malicious = b"".join(bytes(frame) for frame in frames)
    assert len(frames) == 1
    honest = next(  # an honest value whose payload is as long as the malicious one
        "h" * n for n in range(len(malicious))
        if len(dumps("h" * n, "cloudpickle")[1][0]) == len(malicious)
    )
    trusted.put(key, honest, task_name="extract", serializer="cloudpickle")
    assert trusted.get(key) == honest
    path = entry_file(trusted, key)
    tampered = path.read_bytes()[: -len(malicious)] + malicious
    path.write_bytes(tampered)
    assert trusted.lookup(key) is not None  # the head is genuine: only the payload changed
    with caplog.at_level(logging.WARNING, logger="dagrun.results"), pytest.raises(
        CacheMiss, match="payload MAC mismatch"
    ):
        trusted.get(key)
    assert not flag.exists() and not path.exists()
    assert "Discarded result entry" in caplog.text

    path.write_bytes(tampered)  # the collision is live: the checksum alone would load it
    assert ResultStore(location).get(key) == "pwned" and flag.exists()


def test_an_entry_signed_with_another_key_is_rejected(tmp_path: Path) -> None:
    location = tmp_path / "shared"
    key_a = ResultStore(location, signing_key=b"key-A-" + b"a" * 26)
    key_b = ResultStore(location, signing_key=b"key-B-" + b"b" * 26)
    key = make_key("two-keys")
    flag = tmp_path / "sentinel"
    key_a.put(key, Sentinel(flag), task_name="extract")
    assert key_b.lookup(key) is None  # the head alone shows it
    key_a.put(key, Sentinel(flag), task_name="extract")
    with pytest.raises(CacheMiss, match="bad signature"):
        key_b.get(key)
    assert not flag.exists()
    key_a.put(key, Sentinel(flag), task_name="extract")
    assert key_a.get(key) == "pwned" and flag.exists()  # the sentinel is live


def test_a_signed_header_without_a_payload_mac_is_rejected(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r", signing_key=SIGNING_KEY)
    key = make_key("no-mac")
    store.put(key, [1, 2], task_name="t")
    path = entry_file(store, key)
    _, header, payload = split_entry(path.read_bytes())
    del header["payload_mac"]
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(build_entry(envelope._sign(SIGNING_KEY, key, header_bytes), header, payload))
    with pytest.raises(CacheMiss, match="without a payload MAC"):
        store.get(key)


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "ab/../cd" + "0" * 16, "0" * 15, "0" * 129, "A" * 32, "0" * 31 + "\x00",
     "/" + "0" * 32, 12345678901234567890, None],
)
def test_invalid_or_traversing_keys_are_rejected(
    store: ResultStore, key: object, tmp_path: Path
) -> None:
    for call in (lambda: store.put(key, 1, task_name="t"), lambda: store.get(key),
                 lambda: store.lookup(key), lambda: store.info(key)):
        with pytest.raises(ConfigError, match="cache key"):
            call()
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "a\\b", "nul\x00", "..", "", "x" * 600, 7])
def test_traversing_task_names_are_rejected(
    store: ResultStore, name: object, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="task name"):
        store.put(make_key("name"), 1, task_name=name)
    with pytest.raises(ConfigError, match="task name"):
        list(store.entries(name))
    assert files_under(tmp_path) == []


# --- disk full -------------------------------------------------------------------------------


@pytest.fixture
def tiny_filesystem(tmp_path: Path):
    """A genuinely size-limited filesystem: a 1 MiB tmpfs, else a loop-mounted 2 MiB ext4 image."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    tmpfs = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
        capture_output=True, text=True,
    )
    if tmpfs.returncode != 0:
        image = tmp_path / "tiny.img"
        with open(image, "wb") as file:
            file.truncate(2 * 2**20)
        loop = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True, text=True)
        if loop.returncode == 0:
            loop = subprocess.run(
                ["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True, text=True
            )
        require_part(
            "A size-limited filesystem (a 1 MiB tmpfs, else a loop-mounted ext4 image)", loop.returncode == 0,
            "run the tests as root with CAP_SYS_ADMIN, which `mount -t tmpfs` needs "
            f"(tmpfs: {tmpfs.stderr.strip()}; loop ext4: {loop.stderr.strip()})",
        )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_disk_full_raises_naming_the_task_and_leaves_no_temp_file(tiny_filesystem: Path) -> None:
    store = ResultStore(tiny_filesystem / "results")
    key = make_key("full")
    with pytest.raises(ResultStoreError, match=r"task 'big'.*No space left"):
        store.put(key, np.ones(4 * 2**20 // 8), task_name="big")
    assert files_under(tiny_filesystem) == []
    assert store.lookup(key) is None
    store.put(key, "small", task_name="small")  # the store still works once there is room
    assert store.get(key) == "small"


# --- concurrency -----------------------------------------------------------------------------


def write_and_read(location: str, key: str, barrier, rounds: int) -> bool:
    store = ResultStore(location)
    value = np.arange(2 * 2**20)  # 16 MiB: long enough for the writes to overlap
    ok = True
    for _ in range(rounds):
        barrier.wait()
        store.put(key, value, task_name="shared")
        ok &= bool(np.array_equal(store.get(key), value))
    return ok


def test_two_processes_writing_one_key_publish_one_entry(tmp_path: Path) -> None:
    location = str(tmp_path / "results")
    key = make_key("concurrent")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(2)
        with context.Pool(2) as pool:
            results = [
                pool.apply_async(write_and_read, (location, key, barrier, 5)) for _ in range(2)
            ]
            assert [result.get(timeout=120) for result in results] == [True, True]
    store = ResultStore(location)
    assert files_under(Path(location)) == [Path(location) / key[:2] / key]
    np.testing.assert_array_equal(store.get(key), np.arange(2 * 2**20))


# --- expiry, listing, clearing ---------------------------------------------------------------


def test_expired_entries_miss_but_stay_listed(store: ResultStore) -> None:
    expired, fresh = make_key("expired"), make_key("fresh")
    store.put(expired, 1, task_name="t", expires_at=time.time() - 1)
    store.put(fresh, 2, task_name="t", expires_at=time.time() + 3600)
    assert store.lookup(expired) is None and store.info(expired) is not None
    with pytest.raises(CacheMiss, match="expired"):
        store.get(expired)
    assert store.get(fresh) == 2 and store.lookup(fresh).expires_at > time.time()
    assert {info.key for info in store.entries()} == {expired, fresh}


def test_entries_filter_by_task(store: ResultStore) -> None:
    keys = {name: [make_key(name, i) for i in range(3)] for name in ("extract", "load")}
    for name, names_keys in keys.items():
        for key in names_keys:
            store.put(key, name, task_name=name)
    assert sorted(info.key for info in store.entries("extract")) == sorted(keys["extract"])
    assert len(list(store.entries())) == 6 and list(store.entries("missing")) == []


def test_clear_by_task_and_age(store: ResultStore) -> None:
    for i in range(2):
        store.put(make_key("a", i), i, task_name="a")
        store.put(make_key("b", i), i, task_name="b")
    assert store.clear(task_name="a") == 2
    assert {info.task_name for info in store.entries()} == {"b"}
    assert store.clear(older_than=3600) == 0  # nothing is an hour old
    time.sleep(0.3)
    store.put(make_key("c"), "new", task_name="c")
    assert store.clear(older_than=0.2) == 2  # the two "b" entries, not the new one
    assert [info.task_name for info in store.entries()] == ["c"]
    with pytest.raises(ConfigError, match="older_than"):
        store.clear(older_than=-1)
    assert store.clear() == 1 and list(store.entries()) == []


def test_clear_removes_quarantined_entries(store: ResultStore) -> None:
    key = make_key("quarantine")
    store.put(key, [1], task_name="t")
    path = entry_file(store, key)
    path.write_bytes(path.read_bytes()[:-1])
    assert store.lookup(key) is None
    assert len(list(corrupt_dir(store).iterdir())) == 1
    store.clear(task_name="t")
    assert len(list(corrupt_dir(store).iterdir())) == 1  # a task filter keeps them
    store.clear()
    assert list(corrupt_dir(store).iterdir()) == []
