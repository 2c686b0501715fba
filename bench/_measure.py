"""Measuring helpers: CPU and wall clocks, RSS, garbage-collector time, summaries.

CPU time is ``time.process_time()`` (every thread of the process, so the aiosqlite worker
threads of both SQLite checkpointers count); wall time is ``time.perf_counter()``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Clock", "GcTimer", "rss_bytes", "settle", "summary", "timed"]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the repetitions (and how many there were)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def settle() -> int:
    """Collect garbage (all generations, twice for finalizers) and return the RSS."""
    gc.collect()
    gc.collect()
    return rss_bytes()


@dataclass
class Clock:
    cpu: float = 0.0
    wall: float = 0.0


@contextmanager
def timed() -> Iterator[Clock]:
    """Measure the CPU and wall seconds of a block."""
    clock = Clock()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield clock
    finally:
        clock.cpu = time.process_time() - cpu
        clock.wall = time.perf_counter() - wall


class GcTimer:
    """Sum the time CPython's cyclic collector spends, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
