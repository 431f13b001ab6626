"""Per-stage resource accounting: wall time, peak RSS (sampled), CUDA max allocated."""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil


class StageMonitor:
    """`with StageMonitor() as m: ...` then `m.record` = {wall_s, peak_rss_mb, cuda_max_allocated_mb}."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.record: dict[str, Any] = {}
        self._peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __enter__(self) -> "StageMonitor":
        self._cuda = False
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                self._cuda = True
        except ImportError:
            pass
        self._peak = self._proc.memory_info().rss
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        cuda = None
        if self._cuda:
            import torch

            cuda = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.record = {"wall_s": round(time.perf_counter() - self._start, 2), "peak_rss_mb": round(self._peak / 2**20, 1), "cuda_max_allocated_mb": cuda}
