"""Per-stage resource accounting: wall time, peak RSS (sampled), CUDA max allocated, per phase, and reuse events.

    with StageMonitor() as m:                 # one per stage (harness.runs.Stage.run)
        with phase("dpo/model_load"): ...     # anywhere below it: peak RSS / CUDA / wall time of the phase
        note_reuse("dpo", source=...)         # "this stage reused a finished training / cache entry"
    m.record  # {wall_s, peak_rss_mb, cuda_max_allocated_mb, phases: {...}, reused: [...]}

`phase` and `note_reuse` are no-ops outside a monitor, so library code (harness.training.dpo, generation) calls them freely.
Phases nest: a sample counts towards every open phase. A phase run twice (PD-DPO's K primal steps) keeps its highest
peak, summed wall time and a count. On GPU, `torch.cuda.max_memory_allocated` is read and reset at every phase
boundary, so each phase gets its own CUDA peak and the stage keeps the maximum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import psutil

_ACTIVE: list["StageMonitor"] = []


def malloc_trim() -> bool:
    """Hand freed heap pages back to the OS (glibc only). Freed model copies otherwise stay in RSS, so the next
    phase's peak stacks on top of the last one's. Returns whether it ran."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


class StageMonitor:
    """`with StageMonitor() as m: ...` then `m.record` = {wall_s, peak_rss_mb, cuda_max_allocated_mb, phases, reused}."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.record: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self._open: list[str] = []
        self._peak = 0
        self._cuda_peak = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc = psutil.Process()

    # -- sampling ---------------------------------------------------------------------------------------------
    def _take(self) -> None:
        rss = self._proc.memory_info().rss
        with self._lock:
            self._peak = max(self._peak, rss)
            for name in self._open:
                p = self.phases[name]
                p["_peak"] = max(p["_peak"], rss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def _cuda_boundary(self) -> None:
        if not self._cuda:
            return
        import torch

        m = torch.cuda.max_memory_allocated()
        self._cuda_peak = max(self._cuda_peak, m)
        for name in self._open:
            self.phases[name]["_cuda"] = max(self.phases[name]["_cuda"], m)
        torch.cuda.reset_peak_memory_stats()

    # -- phases -----------------------------------------------------------------------------------------------
    def enter_phase(self, name: str) -> None:
        self._take()
        self._cuda_boundary()
        with self._lock:
            p = self.phases.setdefault(name, {"_peak": 0, "_cuda": 0, "wall_s": 0.0, "count": 0, "_start": 0.0})
            p["count"] += 1
            p["_start"] = time.perf_counter()
            p["_peak"] = max(p["_peak"], self._proc.memory_info().rss)
            self._open.append(name)

    def exit_phase(self, name: str) -> None:
        self._take()
        self._cuda_boundary()
        with self._lock:
            p = self.phases[name]
            p["wall_s"] += time.perf_counter() - p["_start"]
            self._open.remove(name)

    # -- context manager --------------------------------------------------------------------------------------
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
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._stop.set()
        self._thread.join()
        self._take()
        self._cuda_boundary()
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        self.record = {"wall_s": round(time.perf_counter() - self._start, 2), "peak_rss_mb": mb(self._peak),
                       "cuda_max_allocated_mb": mb(self._cuda_peak) if self._cuda else None}
        if self.phases:
            self.record["phases"] = {
                name: {"peak_rss_mb": mb(p["_peak"]), "wall_s": round(p["wall_s"], 2), "count": p["count"],
                       "cuda_max_allocated_mb": mb(p["_cuda"]) if self._cuda else None}
                for name, p in self.phases.items()}
        if self.events:
            self.record["reused"] = list(self.events)


def active() -> StageMonitor | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def phase(name: str, trim: bool = False) -> Iterator[None]:
    """Account the block as phase `name` of the running stage (no-op outside one). `trim=True` returns freed heap
    to the OS when the phase ends (see `malloc_trim`)."""
    mon = active()
    if mon is not None:
        mon.enter_phase(name)
    try:
        yield
    finally:
        if trim:
            malloc_trim()
        if mon is not None:
            mon.exit_phase(name)


def note_reuse(kind: str, **info: Any) -> None:
    """Record in the running stage's marker that `kind` (dpo, score-model, ref-logps, generations) was reused."""
    mon = active()
    if mon is not None:
        mon.events.append({"kind": kind, **info})
