"""Timing one call: its seconds, or the median of several after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def call_seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(call_seconds(fn) for _ in range(repeats)) * 1000
