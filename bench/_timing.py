"""Timing helper shared by the benchmarks (not a test: ratios are printed, never asserted)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object], warmup: int, repeats: int, statistic: str = "median") -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls: the median (default) or the fastest
    (``statistic="min"``, the best estimate of capacity on a shared CPU) of ``repeats`` calls.
    Use the same statistic for every quantity a ratio is formed from."""
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) if statistic == "median" else min(times)
