"""The batcher's queue: fair between tenants, and between the requests of each tenant, by the cost
of their items (weighted fair queueing at two levels).

Each request is one flow; each tenant (an API key) holds its requests' flows. Without a tenant a
request is a tenant of its own, so the two levels are one. Fairness is kept in virtual time: a
tenant's ``vtime`` is the service it has had, ``cost / weight`` summed over its computed items, and
the next item of the queue is the one that would end earliest in that time, at both levels (the
tenant whose next item would end first; inside it, the flow whose next item would). So:

* a tenant that opens 100 requests gets one tenant's share of the model, which its 100 requests
  share; a tenant with one request gets the same share for that one;
* a request (a tenant) that arrives while a 1,024-item request is being computed starts level with
  the pass in flight (``clock``: the virtual time of the last pass's first item), not behind all
  that is queued: its items go into the next pass, whatever the size of the request before it;
* shares are counted in cost (tokens, audio frames), not items;
* a request alone is taken in the order it was sent, exactly as a plain first-in first-out queue.

The weight is the request's priority: ``interactive`` weighs 16 (its items' virtual time advances
16 times slower, so a one-text query goes before all but the first sixteenth of the text's cost of
any other request's next items), ``normal`` 1, ``background`` 1/16 (a sixteenth of a normal
request's share while normal work waits, all of the model when none does). A tenant's service is
charged at the weight of the request served, so its interactive work keeps its weight.

No starvation: a request that has work waiting and has had nothing computed for
``max_skipped_passes`` passes (a long item among a stream of short ones, background work under
sustained load) has its next item made the head of the next pass.

The queue also serves the batcher's deadline scheduling (server.engine.deadlines): the requests
with work waiting (``flows``), each one's queued cost, a window in an order the batcher chooses
(``take_from``), and dropping a request whole (``drop``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
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
    seq: int  # arrival order, breaks ties
    queued_at: float = field(default_factory=time.monotonic)
    queued: bool = True


@dataclass(eq=False)
class Tenant:
    """An API key's requests; without keys, one request alone. ``label`` names it in metrics."""

    label: str
    vtime: float = 0.0  # virtual time of the service it has had (cost / weight summed)
    clock: float = 0.0  # its own requests' virtual time where a newly arrived one of them starts
    flows: list[Flow] = field(default_factory=list)  # its requests with work queued or computing


@dataclass(eq=False)
class Flow:
    """One request's items, in the order it sent them, and what the batcher knows of the request."""

    priority: str
    tenant: Tenant
    deadline: float = math.inf  # time.monotonic() by which it must be answered
    items: deque[QueuedItem] = field(default_factory=deque)
    vtime: float = 0.0  # within its tenant: virtual time of the service it has had
    queued_cost: int = 0  # cost of its items still queued
    unresolved: int = 0  # items not yet computed or dropped
    last_served: int = 0  # the pass that last computed one of its items, or the pass it arrived in
    seq: int = 0  # arrival order among requests
    arrived: float = field(default_factory=time.monotonic)
    predicted_s: float | None = None  # seconds to completion predicted at admission (None: no prediction)
    margin: float = 1.0  # the admission margin it was let in under
    doomed: bool = False  # failed early: it could no longer make its deadline
    gone: bool = False  # an item was cancelled: its caller left, or its deadline passed

    @property
    def weight(self) -> float:
        return PRIORITY_WEIGHTS[self.priority]

    def front(self) -> QueuedItem | None:
        """The first item still queued; items dropped meanwhile are discarded here."""
        while self.items and not self.items[0].queued:
            self.items.popleft()
        return self.items[0] if self.items else None


class FairQueue:
    def __init__(self, max_skipped_passes: int = 32, fair: bool = True):
        self.max_skipped_passes = max_skipped_passes
        self.fair = fair  # False: first in, first out, priorities and tenants ignored
        self._tenants: dict[str, Tenant] = {}  # named tenants with requests in the queue
        self._flows: list[Flow] = []  # every request with work queued, in arrival order
        self._clock = 0.0
        self._passes = 0
        self._seq = itertools.count()
        self._depth: dict[str, int] = dict.fromkeys(PRIORITY_WEIGHTS, 0)

    def __len__(self) -> int:
        return sum(self._depth.values())

    def depth_by_priority(self) -> dict[str, int]:
        return dict(self._depth)

    def flows(self) -> list[Flow]:
        """The requests with work queued, in arrival order."""
        self._flows = [f for f in self._flows if f.front() is not None]
        return list(self._flows)

    def push(self, items: list[tuple[Any, int, Any]], priority: str = "normal", tenant: str | None = None,
             deadline: float = math.inf, beside: Flow | None = None) -> Flow:
        """Queue one request's ``(payload, cost, future)`` items as a new flow of ``tenant``'s.
        ``beside``: an earlier flow of the same request (an upload queues its segments as it
        reads them); without a tenant the two share one, so the request still gets one share."""
        if tenant is None and beside is not None and self.fair:
            owner = beside.tenant
        elif tenant is None or not self.fair:
            owner = Tenant(tenant or "none")
        else:
            owner = self._tenants.setdefault(tenant, Tenant(tenant))
        if not owner.flows:  # (re)joining: level with the pass in flight, no credit banked while away
            owner.vtime = max(owner.vtime, self._clock)
        flow = Flow(priority, owner, deadline, vtime=owner.clock, last_served=self._passes, seq=next(self._seq))
        for payload, cost, future in items:
            flow.items.append(QueuedItem(payload, cost, future, flow, next(self._seq)))
        flow.queued_cost = sum(it.cost for it in flow.items)
        flow.unresolved = len(flow.items)
        owner.flows.append(flow)
        self._flows.append(flow)
        self._depth[priority] += len(items)
        return flow

    def discard(self, item: QueuedItem) -> bool:
        """Take a queued item out (its caller is gone); False if it had left the queue already."""
        if not item.queued:
            return False
        item.queued = False
        item.flow.queued_cost -= item.cost
        self._depth[item.flow.priority] -= 1
        return True

    def drop(self, flow: Flow) -> list[QueuedItem]:
        """Take every queued item of one request out; returns them."""
        return [item for item in flow.items if self.discard(item)]

    def resolve(self, item: QueuedItem) -> bool:
        """Count an item of a request as done with (computed or dropped); True when it was the
        request's last, which then leaves its tenant."""
        flow = item.flow
        flow.unresolved -= 1
        if flow.unresolved:
            return False
        flow.tenant.flows.remove(flow)
        if not flow.tenant.flows and self._tenants.get(flow.tenant.label) is flow.tenant:
            del self._tenants[flow.tenant.label]  # the labels of a few API keys: nothing to keep
        return True

    def take_window(self, size: int) -> list[QueuedItem]:
        """The next ``size`` items in the fair order, the head of the next pass first: the earliest
        to end in virtual time, after a starved flow's next item if there is one. They leave the
        queue; give back what the pass does not take with ``give_back``. Empty if every item has left."""
        flows = self.flows()
        if not flows:
            return []
        head = []
        starved = min(flows, key=lambda f: f.last_served)
        if self.fair and self._passes - starved.last_served >= self.max_skipped_passes:
            head.append(self._pop_front(starved))
        if self.fair:
            fair, first_end = self._pop_fair(size - len(head))
            if first_end is not None:  # the clock follows the fair order, not a starved head
                self._clock = max(self._clock, first_end)
        else:
            fair = self.take_from(flows, size - len(head))
        self._passes += 1
        return head + fair

    def take_from(self, flows: Iterable[Flow], size: int) -> list[QueuedItem]:
        """Up to ``size`` items, the requests' in the order given, each request's in its own order.
        They leave the queue as with ``take_window``."""
        taken: list[QueuedItem] = []
        for flow in flows:
            while len(taken) < size and flow.front() is not None:
                taken.append(self._pop_front(flow))
            if len(taken) == size:
                break
        return taken

    def give_back(self, items: list[QueuedItem]) -> None:
        """Return items a pass did not take to the front of their flows, in their order."""
        for item in sorted(items, key=lambda it: it.seq, reverse=True):
            item.queued = True
            item.flow.items.appendleft(item)
            item.flow.queued_cost += item.cost
            self._depth[item.flow.priority] += 1

    def mark_served(self, items: list[QueuedItem]) -> None:
        """Charge the pass's items to their requests and tenants in virtual time."""
        started: set[int] = set()
        for item in items:
            flow, tenant = item.flow, item.flow.tenant
            flow.vtime += item.cost / flow.weight
            if id(tenant) not in started:  # a request of this tenant arriving now starts level with this item
                started.add(id(tenant))
                tenant.clock = max(tenant.clock, flow.vtime)
            tenant.vtime += item.cost / flow.weight
            flow.last_served = self._passes

    def drain(self) -> Iterator[QueuedItem]:
        """Every item still queued, removed (for a shutdown that gave up waiting)."""
        for flow in self._flows:
            for item in flow.items:
                if self.discard(item):
                    yield item
        self._flows.clear()

    def _pop_fair(self, count: int) -> tuple[list[QueuedItem], float | None]:
        """Up to ``count`` items, each the one that would end earliest in virtual time if the items
        before it were computed, and the tenant-level virtual end of the first. Nothing is charged
        here: the pass charges what it takes (``mark_served``)."""
        tenant_time: dict[int, float] = {}
        inner: dict[int, list] = {}  # per tenant: a heap of (virtual end of the flow's next item, seq, flow)
        flow_time: dict[int, float] = {}
        top: list = []
        for flow in self._flows:
            item = flow.front()
            if item is None:
                continue
            tenant = flow.tenant
            flow_time[id(flow)] = flow.vtime
            heap = inner.setdefault(id(tenant), [])
            heap.append((flow.vtime + item.cost / flow.weight, item.seq, flow))
            tenant_time[id(tenant)] = tenant.vtime
        for heap in inner.values():
            heapq.heapify(heap)
            flow = heap[0][2]
            tenant = flow.tenant
            top.append((tenant.vtime + flow.front().cost / flow.weight, flow.front().seq, id(tenant)))
        heapq.heapify(top)
        taken: list[QueuedItem] = []
        first_end = None
        while top and len(taken) < count:
            end, _, key = heapq.heappop(top)
            heap = inner[key]
            _, _, flow = heapq.heappop(heap)
            item = self._pop_front(flow)
            taken.append(item)
            first_end = end if first_end is None else first_end
            charge = item.cost / flow.weight
            tenant_time[key] = end
            flow_time[id(flow)] += charge
            nxt = flow.front()
            if nxt is not None:
                heapq.heappush(heap, (flow_time[id(flow)] + nxt.cost / flow.weight, nxt.seq, flow))
            if heap:
                best = heap[0][2]
                heapq.heappush(top, (tenant_time[key] + best.front().cost / best.weight, best.front().seq, key))
        return taken, first_end

    def _pop_front(self, flow: Flow) -> QueuedItem:
        item = flow.items.popleft()  # the caller has called front(): the first item is queued
        item.queued = False
        flow.queued_cost -= item.cost
        self._depth[flow.priority] -= 1
        return item
