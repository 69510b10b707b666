"""How much work uploads being prepared may hold at once: how many are decoded together, and how
much decoded audio they keep in memory between them.

A few dozen small uploads must not exhaust the process. Each decode runs on a thread of the shared
pool (about 40), and each holds its decoded audio (64 KB a second, float32) until its features are
queued: three crafted uploads at once grew a process from 0.86 to 2.96 GB. So a request is
prepared (decoded, checked for speech, its features computed) only with one of ``max_decoding``
slots, and the samples it keeps are counted against ``max_seconds`` of audio across requests as
they are decoded. Requests wait for a slot by priority, then arrival: a slot's queue in arrival
order alone kept an interactive clip behind every bulk clip of a burst (p95 2 s beside a
sustained overload, against 57 ms alone). How many wait is bounded by the deadline admission
in front of it (a request that cannot be done in time is refused before it gets here) and, past
``WAITING_PER_SLOT`` per slot, here. Past either bound the request is refused at once, 503
``overloaded`` with ``Retry-After``, never left to a slow death.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import itertools
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.engine.deadlines import RANK
from server.errors import Overloaded

WAITING_PER_SLOT = 64


class UploadBudget:
    def __init__(self, max_decoding: int, max_seconds: float, sample_rate: int, retry_after_s: int = 1):
        self.max_decoding = max_decoding or 2 * (os.cpu_count() or 1)  # 0: a slot per core, and as many again
        self.max_samples = int(max_seconds * sample_rate)
        self.sample_rate = sample_rate
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()  # samples are taken on the decoding threads
        self._busy = 0  # slots taken
        self._waiting: list[tuple[int, int, asyncio.Future]] = []  # a heap: (rank, arrival, wakeup)
        self._arrivals = itertools.count()
        self._held = 0

    @property
    def held_seconds(self) -> float:
        return self._held / self.sample_rate

    @asynccontextmanager
    async def decoding(self, priority: str = "normal") -> AsyncIterator[Hold]:
        """A slot, and the audio this request holds until the ``with`` ends; refused at once when
        every slot is taken and enough requests already wait for one."""
        await self._acquire(priority)
        hold = Hold(self)
        try:
            yield hold
        finally:
            self._release()
            with self._lock:
                self._held -= hold.samples

    async def _acquire(self, priority: str) -> None:
        if self._busy < self.max_decoding and not self._waiting:
            self._busy += 1
            return
        if len(self._waiting) >= WAITING_PER_SLOT * self.max_decoding:
            raise Overloaded(f"{self.max_decoding} uploads are being prepared and {len(self._waiting)} wait their "
                             "turn, the most this server takes at once; retry shortly.", self.retry_after_s)
        wakeup = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (RANK[priority], next(self._arrivals), wakeup))
        try:
            await wakeup  # _release hands its slot over: _busy already counts this request
        except asyncio.CancelledError:
            if wakeup.done() and not wakeup.cancelled():
                self._release()  # handed a slot just as the caller left: pass it on
            else:
                self._waiting = [w for w in self._waiting if w[2] is not wakeup]
                heapq.heapify(self._waiting)
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, wakeup = heapq.heappop(self._waiting)
            if not wakeup.done():
                wakeup.set_result(None)  # the slot goes straight to the next in line
                return
        self._busy -= 1

    def _take(self, hold: Hold, samples: int) -> None:
        with self._lock:
            if self._held + samples > self.max_samples:
                raise Overloaded(
                    f"Uploads being prepared hold {self._held / self.sample_rate:.0f} s of decoded audio, the most "
                    f"this server keeps in memory at once ({self.max_samples / self.sample_rate:g} s); retry "
                    "shortly.", self.retry_after_s)
            self._held += samples
            hold.samples += samples


class Hold:
    """One request's share of the budget: the decoded samples it keeps (``take``, from the decoder)."""

    def __init__(self, budget: UploadBudget):
        self.samples = 0
        self._budget = budget

    def take(self, samples: int) -> None:
        self._budget._take(self, samples)
