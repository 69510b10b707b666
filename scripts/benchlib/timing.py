"""Timing calls: one call's seconds, the median of several after a warm-up, and a call run on a
model's own worker thread, where the server runs its passes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


def call_seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn``, after one untimed call that pays its one-off costs."""
    fn()  # warm-up
    return statistics.median(call_seconds(fn) for _ in range(repeats)) * 1000


def on_thread(worker: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
    """``fn()`` on ``worker`` (server.engine.batching.model_thread: the one thread a model loads and
    computes on, as in the server), in inference mode like the server's passes."""
    def run() -> T:
        with torch.inference_mode():
            return fn()

    return worker.submit(run).result()
