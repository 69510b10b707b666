"""How much work uploads being prepared may hold at once: how many are decoded together, and how
much decoded audio they keep in memory between them.

A few dozen small uploads must not exhaust the process. Each decode runs on a thread of the shared
pool (about 40), and each holds its decoded audio (64 KB a second, float32) until its features are
queued: three crafted uploads at once grew a process from 0.86 to 2.96 GB. So a request decodes
only with one of ``max_decoding`` slots, waiting for one while at most ``WAITING_PER_SLOT`` times
as many wait (a burst of short clips is ordinary traffic); and the samples it keeps are counted
against ``max_seconds`` of audio across requests as they are decoded. Past either bound the
request is refused at once, 503 ``overloaded`` with ``Retry-After``, never left to a slow death:
the client can retry, or go to another replica, while this one is still answering.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.errors import Overloaded

WAITING_PER_SLOT = 4


class UploadBudget:
    def __init__(self, max_decoding: int, max_seconds: float, sample_rate: int, retry_after_s: int = 1):
        self.max_decoding = max_decoding
        self.max_samples = int(max_seconds * sample_rate)
        self.sample_rate = sample_rate
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()  # samples are taken on the decoding threads
        self._slots = asyncio.Semaphore(max_decoding)
        self._waiting = 0
        self._held = 0

    @property
    def held_seconds(self) -> float:
        return self._held / self.sample_rate

    @asynccontextmanager
    async def decoding(self) -> AsyncIterator[Hold]:
        """A decode slot, and the audio this request holds until the ``with`` ends; refused at once
        when every slot is taken and enough requests already wait for one."""
        if self._slots.locked() and self._waiting >= WAITING_PER_SLOT * self.max_decoding:
            raise Overloaded(f"{self.max_decoding} uploads are being decoded and {self._waiting} wait their turn, "
                             "the most this server takes at once; retry shortly.", self.retry_after_s)
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        hold = Hold(self)
        try:
            yield hold
        finally:
            self._slots.release()
            with self._lock:
                self._held -= hold.samples

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
