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
in front of it (a request that cannot be done in time is refused before it gets here: the door
counts the wait for a slot, ``wait_forecast``, from how long slots have been held lately) and, past
``WAITING_PER_SLOT`` per slot, here. Past either bound the request is refused at once, 503
``overloaded`` with ``Retry-After``, never left to a slow death.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import os
import itertools
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.engine.deadlines import RANK
from server.errors import Overloaded, Timeout

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
        self._hold_s: float | None = None  # how long a slot is held, lately (decode, speech, queueing)
        # Seconds between slots handed over while requests wait, lately: the pace the queue moves
        # at under load, which a slot's hold over the slots misjudged by a third in a burst (more
        # preparations at once share the cores with the model and with each other).
        self._pace_s: float | None = None
        self._last_handover: float | None = None

    @property
    def held_seconds(self) -> float:
        return self._held / self.sample_rate

    @asynccontextmanager
    async def decoding(self, priority: str = "normal", deadline: float = math.inf) -> AsyncIterator[Hold]:
        """A slot, and the audio this request holds until the ``with`` ends; refused at once when
        every slot is taken and enough requests already wait for one; 504 if the request's
        ``deadline`` (``time.monotonic()``) passes while it waits."""
        await self._acquire(priority, deadline)
        hold, since = Hold(self), time.monotonic()
        try:
            yield hold
        finally:
            held_s = time.monotonic() - since
            self._hold_s = held_s if self._hold_s is None else 0.9 * self._hold_s + 0.1 * held_s
            self._release()
            with self._lock:
                self._held -= hold.samples

    def wait_forecast(self, priority: str = "normal") -> float:
        """Seconds a request of ``priority`` arriving now would wait for a slot: none while one is
        free; else its turn among those waiting at its priority or above, as slots free at the
        pace they have lately. Without a slot held yet, 0: nothing to go by."""
        if self._busy < self.max_decoding:
            return 0.0
        if self._pace_s is not None:
            pace = self._pace_s
        elif self._hold_s is not None:  # no hand-over under load yet: a calm hold over the slots
            pace = self._hold_s / self.max_decoding
        else:
            return 0.0
        ahead = sum(1 for own_rank, _, wakeup in self._waiting if own_rank <= RANK[priority] and not wakeup.done())
        return (ahead + 1) * pace

    async def _acquire(self, priority: str, deadline: float) -> None:
        if self._busy < self.max_decoding and not self._waiting:
            self._busy += 1
            return
        if len(self._waiting) >= WAITING_PER_SLOT * self.max_decoding:
            raise Overloaded(f"{self.max_decoding} uploads are being prepared and {len(self._waiting)} wait their "
                             "turn, the most this server takes at once; retry shortly.", self.retry_after_s)
        wakeup = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (RANK[priority], next(self._arrivals), wakeup))
        try:
            # _release hands its slot over: _busy already counts this request
            await asyncio.wait_for(asyncio.shield(wakeup), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self._waiting = [w for w in self._waiting if w[2] is not wakeup]
            heapq.heapify(self._waiting)
            raise Timeout("The request did not complete within its deadline: it was still waiting for its "
                          "upload to be prepared.") from None
        except asyncio.CancelledError:
            if wakeup.done() and not wakeup.cancelled():
                self._release()  # handed a slot just as the caller left: pass it on
            else:
                self._waiting = [w for w in self._waiting if w[2] is not wakeup]
                heapq.heapify(self._waiting)
            raise

    def _release(self) -> None:
        now = time.monotonic()
        while self._waiting:
            _, _, wakeup = heapq.heappop(self._waiting)
            if not wakeup.done():
                wakeup.set_result(None)  # the slot goes straight to the next in line
                if self._last_handover is not None:
                    gap = now - self._last_handover
                    self._pace_s = gap if self._pace_s is None else 0.8 * self._pace_s + 0.2 * gap
                self._last_handover = now
                return
        self._last_handover = None  # no one waits: the next gap would be idle time, not the pace
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
