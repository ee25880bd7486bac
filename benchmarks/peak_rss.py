"""Peak resident memory of this process while a block runs, sampled in a thread (benchmarks
share it: memory growth is compared between runs measured the same way)."""

from __future__ import annotations

import gc
import threading

import psutil


class PeakRSS:
    """Samples this process's RSS every 20 ms while in the `with` block."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.start = self.process.memory_info().rss
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        gc.collect()
        self.end = self.process.memory_info().rss
