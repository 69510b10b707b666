"""The soak test's memory readings (benchlib/soak.py): a process's resident memory, and its level
after the warm-up and at the end, each read as a median over a window."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np


def rss_bytes(pid: int) -> int | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # the process is gone, or not ours to read
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MB"


def window_medians(samples: list[tuple[float, int | None]], warmup_s: float, load_s: float,
                   window_s: float) -> dict:
    """Resident memory after the warm-up and at the end, each the median of the readings in a window
    (``[warmup, warmup + w]`` and ``[load - w, load]``; ``w`` is ``window_s``, shortened so the two
    do not overlap). A median over several trim periods (the server trims every 10 s) and many
    batches reads the level, not where one reading fell in that sawtooth or on one large batch."""
    window = max(0.0, min(window_s, (load_s - warmup_s) / 2))
    readings = [(t, v) for t, v in samples if v]

    def median_in(lo: float, hi: float) -> int | None:
        inside = [v for t, v in readings if lo <= t <= hi]
        if not inside:  # a window shorter than the sampling interval: the nearest reading
            nearest = min(readings, key=lambda r: abs(r[0] - lo), default=None)
            return nearest[1] if nearest else None
        return int(np.median(inside))

    warm_window, end_window = (warmup_s, warmup_s + window), (load_s - window, load_s)
    return {"warm": median_in(*warm_window), "end": median_in(*end_window),
            "warm_window_s": [round(x, 1) for x in warm_window], "end_window_s": [round(x, 1) for x in end_window]}


def rss_now(pid: int | None, trim: bool = False) -> int | None:
    """``pid``'s resident memory now, None for no pid. This process's (an in-process server) after a
    garbage collection and, with ``trim`` (--malloc-trim), glibc's malloc_trim."""
    if pid is None:
        return None
    if pid == os.getpid():
        gc.collect()
        if trim:
            malloc_trim()
    return rss_bytes(pid)


def malloc_trim() -> bool:
    """Hand freed heap memory back to the OS (glibc only). Readings taken after it show live memory,
    not memory glibc keeps for reuse."""
    import ctypes
    import ctypes.util

    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
