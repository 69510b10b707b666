"""Keep the server's resident memory flat under a long mixed load.

**oneDNN's primitive cache** (the cause of the growth). On CPU, torch runs some float32 ops through
oneDNN (GELU in the XLM-R models, SenseVoice's depthwise convolutions and their reorders; every
linear layer on the bfloat16 path), and oneDNN builds a JIT-compiled primitive per input shape
and keeps it in a process-wide LRU cache of 1024 by default. Padded batch shapes vary with every
batch, so the cache never stops turning over: each new primitive is allocated in the middle of
the forward pass's activations and lives on after they are freed, splitting the free space glibc
would reuse for the next batch's tensors. The heap kept growing with the number of primitives
alive, not with live data (scripts/soak.py, 2 CPUs, tiny models: 300 MB in use, 700 MB free but
held, resident size 0.7 -> 1.5 GB over 3 minutes; one forward-pass thread alone grew 540 MB in
2,400 reranker batches with the default cache, 127 MB with 16 entries, 63 MB with none).
``limit_onednn_cache`` caps it at 16 entries: still enough that the layers of one forward pass,
which share their shapes, reuse one primitive (with no cache at all every layer compiles its own:
6-12% slower forward passes), while at most 16 primitives can pin holes in the heap.

**malloc_trim**. glibc keeps memory that Python and torch free in its arenas; ``malloc_trim(0)``
every 10 s hands free pages back to the OS. It costs nothing measurable. Elsewhere than glibc this
is a no-op.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = 16


def limit_onednn_cache(capacity: int = ONEDNN_CACHE_CAPACITY) -> str:
    """Cap oneDNN's primitive cache at ``capacity`` entries unless the environment already sets
    ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` (that value wins; 1024 is oneDNN's own default). Returns
    the value in effect. oneDNN reads it once, when the process creates its first primitive, so
    this must run before any model runs: the app calls it at start-up, before loading models."""
    value = os.environ.setdefault(ONEDNN_CACHE_ENV, str(capacity))
    log.debug("oneDNN primitive cache capacity: %s", value)
    return value


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


async def trim_periodically(interval_s: float = 10.0) -> None:
    trim = _malloc_trim()
    if trim is None:
        log.debug("malloc_trim is not available; freed memory stays with the allocator")
        return
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(trim, 0)
