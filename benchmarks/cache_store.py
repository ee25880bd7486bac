"""Write then read-and-verify a 256 MiB numpy array through the result store, against plain numpy.

    python benchmarks/cache_store.py [--mib 256] [--rounds 3] [--dir DIR] [--signed]

Both sides do the same work a cache needs: the plain side is `numpy.save` + `fsync` and
`numpy.load`; the store side is `ResultStore.put` (serialize, checksum, write, fsync, atomic
rename) and `ResultStore.get` (read, verify header and checksum, deserialize). Rounds alternate
the two sides and the median of each is reported, for two cases:

- warm: the read follows the write, so the file is in the page cache (reading is a memcpy);
- cold: the file's pages are dropped with posix_fadvise(DONTNEED) before reading (the usual case
  for a cache entry written by an earlier run). Only the benchmark's own files are evicted.

The bar (issue 3) is store / plain <= 1.5, for the default, unsigned store. The hash-only line
shows the floor the hashes set: every write and every verified read hashes the whole payload
once with XXH3-128 and, with `--signed` (a signing key, as with DAGRUN_RESULTS_KEY), once more
with HMAC-SHA256, which is an order of magnitude slower.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dagrun.content_hashing import content_hash
from dagrun.hashing import hash_struct
from dagrun.results import ResultStore

BAR = 1.5


def drop_from_page_cache(path: Path) -> None:
    """Evict one file's pages, so the next read comes from the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def plain_round(array: np.ndarray, directory: Path, cold: bool) -> tuple[float, float]:
    path = directory / "plain.npy"
    start = time.perf_counter()
    with open(path, "wb") as file:
        np.save(file, array)
        file.flush()
        os.fsync(file.fileno())
    written = time.perf_counter()
    if cold:
        drop_from_page_cache(path)
    read_start = time.perf_counter()
    loaded = np.load(path)
    end = time.perf_counter()
    if not np.array_equal(loaded[:1000], array[:1000]):
        raise SystemExit("plain round trip differs")
    path.unlink()
    return written - start, end - read_start


def store_round(array: np.ndarray, store: ResultStore, key: str, cold: bool) -> tuple[float, float]:
    start = time.perf_counter()
    info = store.put(key, array, task_name="benchmark", serializer="cloudpickle")
    written = time.perf_counter()
    if cold:
        drop_from_page_cache(Path(info.path))
    read_start = time.perf_counter()
    loaded = store.get(key)
    end = time.perf_counter()
    if not np.array_equal(loaded[:1000], array[:1000]):
        raise SystemExit("store round trip differs")
    store.clear()
    return written - start, end - read_start


def best_of_3(run: Callable[[], object]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: /tmp)")
    parser.add_argument("--signed", action="store_true", help="sign entries (HMAC-SHA256)")
    options = parser.parse_args(argv)

    array = np.random.default_rng(0).random(options.mib * 2**20 // 8)
    print(f"array: {array.nbytes / 2**20:.0f} MiB float64, {options.rounds} rounds, "
          f"{os.cpu_count()} cpus, python {sys.version.split()[0]}, "
          f"{'signed' if options.signed else 'unsigned'} store")
    signing_key = b"benchmark-signing-key-0123456789" if options.signed else None
    payload = memoryview(array).cast("B")
    hash_seconds = best_of_3(lambda: content_hash(payload))
    print(f"hash only (XXH3-128 checksum, one pass, best of 3): {hash_seconds:7.3f} s")
    if signing_key is not None:
        mac_seconds = best_of_3(lambda: hmac.new(signing_key, payload, hashlib.sha256).digest())
        print(f"hash only (HMAC-SHA256 payload MAC, one pass, best of 3): {mac_seconds:7.3f} s")
        hash_seconds += mac_seconds

    failed = False
    with tempfile.TemporaryDirectory(dir=options.dir, prefix="dagrun-bench-") as tmp:
        directory = Path(tmp)
        store = ResultStore(directory / "results", signing_key=signing_key)
        key = hash_struct(["Benchmark", "cache_store"])
        for mode in ("warm", "cold"):
            plain: list[tuple[float, float]] = []
            stored: list[tuple[float, float]] = []
            for _ in range(options.rounds):
                plain.append(plain_round(array, directory, cold=mode == "cold"))
                stored.append(store_round(array, store, key, cold=mode == "cold"))
            plain_write = statistics.median(w for w, _ in plain)
            plain_read = statistics.median(r for _, r in plain)
            store_write = statistics.median(w for w, _ in stored)
            store_read = statistics.median(r for _, r in stored)
            ratio = (store_write + store_read) / (plain_write + plain_read)
            failed |= ratio > BAR and not options.signed  # the bar is for the default store
            print(f"[{mode}] plain  numpy.save+fsync {plain_write:7.3f} s  "
                  f"numpy.load {plain_read:7.3f} s  total {plain_write + plain_read:7.3f} s")
            print(f"[{mode}] store  put              {store_write:7.3f} s  "
                  f"get+verify {store_read:7.3f} s  total {store_write + store_read:7.3f} s")
            print(f"[{mode}] ratio store/plain: write {store_write / plain_write:5.2f}  "
                  f"read {store_read / plain_read:5.2f}  total {ratio:5.2f}  "
                  f"(bar <= {BAR}{', unsigned store' if options.signed else ''}: "
                  f"{'ok' if ratio <= BAR else 'MISSED'})")
            # A write hashes the payload once and a verified read once more, whatever the I/O.
            print(f"[{mode}] floor: two hash passes {2 * hash_seconds:.3f} s vs "
                  f"{BAR} x plain {BAR * (plain_write + plain_read):.3f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
