"""Timing helper shared by the benchmarks (not a test: ratios are printed, never asserted)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object], warmup: int, repeats: int, statistic: str = "median",
          clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls: the median (default) or the fastest
    (``statistic="min"``, the best estimate of capacity on a shared CPU) of ``repeats`` calls.
    Use the same statistic for every quantity a ratio is formed from. ``clock=time.process_time``
    counts this process's CPU seconds (with one thread: robust to other processes on the machine)."""
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) if statistic == "median" else min(times)
