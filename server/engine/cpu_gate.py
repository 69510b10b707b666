"""On a CPU, forward passes and request preparation take turns instead of sharing the cores.

A forward pass runs torch's OpenMP team on every core. Any other busy thread beside it takes a
core from that team, whose barriers then wait on a descheduled thread at every operator; the GIL is
not what it loses (kaldi-native-fbank, PyAV and torch release it while they compute), the core is.
Measured (2 cores, small SenseVoice, 4 clips of 10 s per pass, ``scripts/asr_cpu_costs.py``): 32
ms per clip alone, 99-154 ms with one thread beside it computing features, checking for speech or
decoding uploads. Taking turns costs the pass nothing and the preparation only its wait, which is
shorter than the time it would add to every pass in flight.

So a pass waits until the preparation already running has finished; preparation that arrives
while a pass runs or waits runs after it. Turns alternate: whatever preparation waited through
a pass goes before the next pass, and a pass waiting goes before preparation that arrives later,
so neither side starves. Preparation runs side by side with other preparation (one core each);
forward passes of different models on one CPU run one at a time. Preparation that has held its
turn for ``max_hold`` (long audio: the speech check of an hour takes tens of seconds) stops
holding passes back: they run beside it, as they would without the gate, rather than stall
every request behind one upload.

On a GPU the pass runs on the device and the gate is off: preparation overlaps it freely.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


class CpuGate:
    """An asyncio readers-writer lock with alternating turns: passes are the writers. State only
    changes between awaits (one event loop), so releasing never awaits and cannot be interrupted."""

    def __init__(self, enabled: bool = True, max_hold: float = 0.25):
        self.enabled = enabled
        self.max_hold = max_hold  # seconds; a typical request's preparation takes 5-100 ms
        self._passing = False  # a forward pass holds the gate
        self._passes_waiting = 0
        self._holding: dict[object, float] = {}  # preparation holding the gate -> when it began
        # Waiting preparation by the number of passes finished when it arrived: what arrived before
        # the last pass finished has waited through a pass, and goes before the next one.
        self._prep_waiting: Counter[int] = Counter()
        self._passes_done = 0
        self._wakeups: list[asyncio.Future] = []

    @property
    def preparing(self) -> int:
        """Preparation holding the gate now."""
        return len(self._holding)

    @property
    def preparation_waiting(self) -> int:
        return sum(self._prep_waiting.values())

    @asynccontextmanager
    async def forward_pass(self) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        self._passes_waiting += 1
        try:
            await self._until(self._pass_may_start, self._until_overstayed)
        finally:
            self._passes_waiting -= 1
            self._wake_all()
        self._passing = True
        try:
            yield
        finally:
            self._passing = False
            self._passes_done += 1
            self._wake_all()

    @asynccontextmanager
    async def preparation(self) -> AsyncIterator[None]:
        """Hold around CPU-heavy preparation handed to a thread, never around a wait for results."""
        if not self.enabled:
            yield
            return
        arrived = self._passes_done
        self._prep_waiting[arrived] += 1
        try:
            await self._until(lambda: self._preparation_may_start(arrived))
        finally:
            self._prep_waiting[arrived] -= 1
            if not self._prep_waiting[arrived]:
                del self._prep_waiting[arrived]
            self._wake_all()
        holder = object()
        self._holding[holder] = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            del self._holding[holder]
            self._wake_all()

    async def run_preparation(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the thread pool, in a preparation turn. A caller cancelled
        meanwhile is cancelled once the thread is done: a thread cannot be stopped, and what it
        uses (a decoder, a model borrowed from a pool, a share of a budget) must not be let go
        under it, nor the turn given to a pass while it still computes."""
        async with self.preparation():
            work = asyncio.ensure_future(run_in_threadpool(fn, *args, **kwargs))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                while not work.done():  # a second cancel (callers often cancel twice) waits all the same
                    try:
                        await asyncio.wait({work})
                    except asyncio.CancelledError:
                        pass
                if not work.cancelled():
                    work.exception()  # seen: the caller is gone, nobody will read it
                raise

    def _pass_may_start(self) -> bool:
        waited_through_a_pass = any(arrived < self._passes_done for arrived in self._prep_waiting)
        return not self._passing and not waited_through_a_pass and self._until_overstayed() is None

    def _until_overstayed(self) -> float | None:
        """Seconds until every preparation holding the gate has held it for ``max_hold``; None: now."""
        if not self._holding:
            return None
        left = max(self._holding.values()) + self.max_hold - asyncio.get_running_loop().time()
        return left if left > 0 else None

    def _preparation_may_start(self, arrived: int) -> bool:
        return not self._passing and (not self._passes_waiting or arrived < self._passes_done)

    async def _until(self, may_start: Callable[[], bool],
                     time_left: Callable[[], float | None] = lambda: None) -> None:
        """Wait for a change of state that lets ``may_start()``, or for ``time_left()`` to run out."""
        while not may_start():
            wakeup = asyncio.get_running_loop().create_future()
            self._wakeups.append(wakeup)
            try:
                await asyncio.wait([wakeup], timeout=time_left())
            finally:
                if wakeup in self._wakeups:
                    self._wakeups.remove(wakeup)

    def _wake_all(self) -> None:
        for wakeup in self._wakeups:
            if not wakeup.done():
                wakeup.set_result(None)
        self._wakeups.clear()
