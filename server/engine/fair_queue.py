"""The batcher's queue: fair between requests, by the cost of their items (weighted fair queueing).

Each request is one flow. Its items are tagged, when queued, with the virtual time at which a fair
share of the model would have finished them: ``tag = clock + cumulative cost / weight``, where
``clock`` is the tag of the last forward pass's first item (self-clocked fair queueing). Passes
take the items of lowest tag first, so:

* a request that arrives while a 1,024-item request is being computed starts level with the pass
  in flight: its items have lower tags than all but that request's next few items, and go into
  the next pass, whatever the size of the request before it;
* requests share passes in proportion to their weight, counted in cost (tokens, audio frames), not
  items: a request of long items does not get more of the model than one of short items;
* a request alone is taken in the order it was sent, exactly as a plain first-in first-out queue.

The weight is the request's priority: ``interactive`` weighs 16 (its items' tags advance 16 times
slower, so a one-text query goes before all but the first sixteenth of the text's cost of any
other request's next items), ``normal`` 1, ``background`` 1/16 (it gets a sixteenth of a normal
request's share while normal work waits, and all of the model when none does).

No starvation: a request that has work waiting and has had nothing computed for
``max_skipped_passes`` passes (a long item among a stream of short ones, background work under
sustained load) has its next item made the head of the next pass.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Priority = Literal["interactive", "normal", "background"]
PRIORITY_WEIGHTS: dict[str, float] = {"interactive": 16.0, "normal": 1.0, "background": 1 / 16}


@dataclass(eq=False)
class QueuedItem:
    payload: Any
    cost: int
    future: Any  # asyncio.Future
    flow: Flow
    tag: float
    seq: int  # arrival order, breaks ties between equal tags
    queued_at: float = field(default_factory=time.monotonic)
    queued: bool = True


@dataclass(eq=False)
class Flow:
    """One request's items, in the order it sent them (their tags rise in that order)."""

    priority: str
    items: deque[QueuedItem] = field(default_factory=deque)
    last_served: int = 0  # the pass that last computed one of its items, or the pass it arrived in

    def front(self) -> QueuedItem | None:
        """The first item still queued; items dropped meanwhile are discarded here."""
        while self.items and not self.items[0].queued:
            self.items.popleft()
        return self.items[0] if self.items else None


class FairQueue:
    def __init__(self, max_skipped_passes: int = 32, fair: bool = True):
        self.max_skipped_passes = max_skipped_passes
        self.fair = fair  # False: first in, first out, priorities ignored (to compare, or by choice)
        self._flows: list[Flow] = []
        self._clock = 0.0
        self._passes = 0
        self._seq = itertools.count()
        self._depth: dict[str, int] = dict.fromkeys(PRIORITY_WEIGHTS, 0)

    def __len__(self) -> int:
        return sum(self._depth.values())

    def depth_by_priority(self) -> dict[str, int]:
        return dict(self._depth)

    def push(self, items: list[tuple[Any, int, Any]], priority: str = "normal") -> list[QueuedItem]:
        """Queue one request's ``(payload, cost, future)`` items as a new flow."""
        weight = PRIORITY_WEIGHTS[priority]
        flow = Flow(priority, last_served=self._passes)
        tag = self._clock
        for payload, cost, future in items:
            seq = next(self._seq)
            tag = tag + cost / weight if self.fair else seq
            flow.items.append(QueuedItem(payload, cost, future, flow, tag, seq))
        self._flows.append(flow)
        self._depth[priority] += len(items)
        return list(flow.items)

    def discard(self, item: QueuedItem) -> bool:
        """Take a queued item out (its caller is gone); False if it had left the queue already."""
        if not item.queued:
            return False
        item.queued = False
        self._depth[item.flow.priority] -= 1
        return True

    def take_window(self, size: int) -> list[QueuedItem]:
        """The next ``size`` items in the fair order, the head of the next pass first: the lowest
        tags, after a starved flow's next item if there is one. They leave the queue; give back
        what the pass does not take with ``give_back``. Empty if every item has left."""
        self._flows = [f for f in self._flows if f.front() is not None]
        if not self._flows:
            return []
        starved = min(self._flows, key=lambda f: f.last_served)
        head = []
        if self.fair and self._passes - starved.last_served >= self.max_skipped_passes:
            head.append(self._pop_front(starved))
        fair = self._pop_lowest_tags(size - len(head))
        if fair:  # the clock follows the fair order, not a starved head (whose tag may lie far ahead)
            self._clock = max(self._clock, fair[0].tag)
        self._passes += 1
        return head + fair

    def give_back(self, items: list[QueuedItem]) -> None:
        """Return items a pass did not take to the front of their flows, in their order."""
        for item in sorted(items, key=lambda it: it.seq, reverse=True):
            item.queued = True
            item.flow.items.appendleft(item)
            self._depth[item.flow.priority] += 1

    def mark_served(self, items: list[QueuedItem]) -> None:
        for item in items:
            item.flow.last_served = self._passes

    def drain(self) -> Iterator[QueuedItem]:
        """Every item still queued, removed (for a shutdown that gave up waiting)."""
        for flow in self._flows:
            for item in flow.items:
                if self.discard(item):
                    yield item
        self._flows.clear()

    def _pop_lowest_tags(self, count: int) -> list[QueuedItem]:
        """Up to ``count`` items in tag order, merged from the flows' fronts."""
        heap = [(f.items[0].tag, f.items[0].seq, f) for f in self._flows if f.front() is not None]
        heapq.heapify(heap)
        taken = []
        while heap and len(taken) < count:
            _, _, flow = heapq.heappop(heap)
            taken.append(self._pop_front(flow))
            nxt = flow.front()
            if nxt is not None:
                heapq.heappush(heap, (nxt.tag, nxt.seq, flow))
        return taken

    def _pop_front(self, flow: Flow) -> QueuedItem:
        item = flow.items.popleft()  # the caller has called front(): the first item is queued
        item.queued = False
        self._depth[flow.priority] -= 1
        return item
