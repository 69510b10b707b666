"""Deadlines: what each request asks of the batcher, when queued work will be done, and what to do
when not all of it can be done in time.

Every request has a deadline (``Terms``). The batcher forecasts seconds of work from its own passes
(``Forecast``), and from that:

* admission (``judge``): a new request is refused at once, before anything is computed, when the
  work that would be served before it (every queued request of a higher priority, and those of its
  own priority with an earlier deadline; requests still being prepared count at the cost requests
  have had lately, ``Reservation``), plus its own, would not be done by its deadline if it took
  longer than forecast by the margin that keeps misses near 5% (``Forecast.margin``); or when it
  would overtake a request of its priority
  (a shorter deadline) that could then no longer make its own. ``Retry-After`` is when the work
  queued at its priority and above, plus its own, would fit its timeout. A request with nothing
  ahead of it is always let in: it is the best time it will get, and a forecast that says
  otherwise is corrected only by passes that run;
* each pass (``plan``): the requests in deadline order (priority first, then the earliest deadline:
  the order that finishes the most of them in time when they cannot all be, as first in, first out
  does when every request has the same timeout). A request that this order finishes too late even
  if its work went 10% faster than forecast (``DOOM_FACTOR``) is doomed: it is failed at once and
  its items dropped, so no compute goes to an answer nobody can use; a request alone is never
  doomed. ``slack`` is how long every request could wait and still be done by its aim (``aim``:
  its deadline less the reserve admission kept for the forecast's errors): while it covers a
  pass, the batcher serves the fair order (server.engine.fair_queue), exactly as with no
  deadlines; when it does not, it serves this order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from server.engine.fair_queue import Flow
from server.errors import Timeout
from server.engine.pass_times import BusyRate, ForwardTimeFit

RANK = {"interactive": 0, "normal": 1, "background": 2}  # served in this order when time is short
# A request is let in only if it would make its deadline with its work taking ``Forecast.margin``
# times the forecast: a request refused at the door can go to another replica, one found late
# later has waited for nothing. The margin follows the outcomes (``Forecast.judged``): each accepted
# request that misses its deadline widens it by MISS_STEP, each that meets it narrows it by
# MET_STEP, so misses settle near MET_STEP / MISS_STEP (5%) of the requests let in, whatever biases
# the forecast in a given mix (under sustained overload it errs late more than early).
MARGIN_START, MARGIN_MIN, MARGIN_MAX = 1.25, 1.05, 2.0
MISS_STEP, MET_STEP = 0.10, 0.005
# A request is doomed only if it is late even with its work done this much faster than forecast:
# dropping one that would have made it costs an answer, keeping one that will not costs only compute.
DOOM_FACTOR = 0.9


@dataclass(frozen=True)
class Terms:
    """What one request asks of the batcher beside its items: its priority, the deadline by which
    it must be answered (``time.monotonic()``; ``timeout`` seconds after it arrived) and the tenant
    (an API key's label) whose share of the model it takes; None: a tenant of its own."""

    priority: str = "normal"
    deadline: float = math.inf
    tenant: str | None = None
    timeout: float = math.inf

    @classmethod
    def within(cls, timeout: float, priority: str = "normal", tenant: str | None = None,
               arrived: float | None = None) -> Terms:
        """``arrived``: when the request came in (``time.monotonic()``); default: now."""
        return cls(priority, (time.monotonic() if arrived is None else arrived) + timeout, tenant, timeout)

    def missed(self) -> Timeout:
        """The error for a request past its deadline (504)."""
        return Timeout(f"The request did not complete within {self.timeout:g} s.")


NO_DEADLINE = Terms()  # a normal request with no deadline and no tenant (tests, tools)


@dataclass
class Forecast:
    """Seconds to compute queued work of a given real cost: the longer of one pass over it (the
    pass-time fit, for little work, which the fixed cost of a pass dominates; no pass is larger
    than the budget) and the cost at the rate the model has kept while busy (for much work).

    Work of a higher priority keeps arriving and goes first: for a request of a lower rank, the
    model has only the share of its time that such work has left it lately while work waited
    (``served``, learnt from busy passes only)."""

    fit: ForwardTimeFit = field(default_factory=ForwardTimeFit)
    rate: BusyRate = field(default_factory=BusyRate)
    padding: float = 1.0  # padded / real cost of recent passes
    pass_budget: float = math.inf  # padded cost of the largest pass
    served: list[float] = field(default_factory=lambda: [0.0] * len(RANK))  # cost served lately, by rank
    decay: float = 0.97
    margin: float = MARGIN_START

    def judged(self, met: bool, admitted_with: float) -> None:
        """An accepted request whose forecast mattered (it waited behind others) met or missed its
        deadline: widen or narrow the admission margin. Only a miss of a request let in under the
        margin as it is now widens it: requests let in together tend to miss together (a slow
        spell, the first passes of a cold process), and one cause should widen it once."""
        if not met and admitted_with < self.margin:
            return
        step = -MET_STEP if met else MISS_STEP
        self.margin = min(MARGIN_MAX, max(MARGIN_MIN, self.margin * (1 + step)))

    def learn(self, costs_by_rank: Mapping[int, float]) -> None:
        self.served = [self.decay * total + costs_by_rank.get(r, 0.0) for r, total in enumerate(self.served)]

    @property
    def ready(self) -> bool:
        """Whether there is anything to go by: a pass seen, and the rate while busy."""
        return self.rate.per_unit is not None and self.fit.seconds(0.0) is not None

    def seconds(self, cost: float, rank: int = 0) -> float:
        """Only once ``ready``."""
        per_unit = self.rate.per_unit
        one_pass = self.fit.seconds(min(cost * self.padding, self.pass_budget))
        if per_unit is None or one_pass is None:
            raise RuntimeError("no pass seen yet: nothing to forecast from (check Forecast.ready)")
        total = sum(self.served)
        overtaken = min(0.5, sum(self.served[:rank]) / total) if total else 0.0
        return max(one_pass, cost * per_unit) / (1 - overtaken)


@dataclass(eq=False)
class Reservation:
    """A request being prepared (tokenized, decoded) before its items are queued: ``queued_cost``
    is its likely cost, which requests that arrive meanwhile find ahead of them, as if queued."""

    priority: str
    deadline: float
    queued_cost: float
    seq: float = math.inf  # after any queued request of the same deadline
    arrived: float = field(default_factory=time.monotonic)


def aim(flow: Flow | Reservation, margin: float) -> float:
    """When the schedule aims to have ``flow`` done: its deadline, less the share of its timeout
    that admission kept in reserve for the forecast's errors (a request let in when its work
    would take ``timeout / margin`` ends at its aim if the forecast holds). Scheduling against the
    deadline itself would let the fair order spend that reserve: every request would end a pass
    before its deadline, where any slow pass makes it late."""
    return flow.deadline - (1 - 1 / margin) * (flow.deadline - flow.arrived)


def rank(priority: str, fair: bool) -> int:
    return RANK[priority] if fair else 0  # first in, first out knows no priorities


def order_key(flow: Flow | Reservation, fair: bool) -> tuple[int, float, float]:
    return rank(flow.priority, fair), flow.deadline, flow.seq


@dataclass
class Plan:
    order: list[Flow]  # the requests that can make their deadlines, in deadline order
    doomed: list[Flow]  # those that cannot
    slack: float  # seconds every request in ``order`` could wait and still make its deadline


def plan(flows: Sequence[Flow], forecast: Forecast, start_in: float, fair: bool, now: float) -> Plan:
    """``start_in``: seconds until the model is free (the pass in flight)."""
    order, doomed, slack, ahead = [], [], math.inf, 0.0
    for flow in sorted(flows, key=lambda f: order_key(f, fair)):
        work = forecast.seconds(ahead + flow.queued_cost, rank(flow.priority, fair))
        if len(flows) > 1 and now + start_in + DOOM_FACTOR * work > flow.deadline:
            doomed.append(flow)
            continue
        ahead += flow.queued_cost
        order.append(flow)
        slack = min(slack, aim(flow, forecast.margin) - (now + start_in + work))
    return Plan(order, doomed, max(0.0, slack))


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    predicted_s: float | None = None  # seconds from now to the request's completion, as forecast
    retry_after_s: int = 1  # when refused: when the forecast says it would fit


def judge(flows: Sequence[Flow | Reservation], terms: Terms, cost: float, forecast: Forecast,
          start_in: float, fair: bool, now: float, ready_in: float = 0.0, reserved: float = 0.0) -> Verdict:
    """Whether a new request of ``cost`` can be done by ``terms.deadline`` (see the module's text).
    ``ready_in``: seconds before its items can be queued at the earliest, by its preparation's
    forecast (a wait for a decoding slot); the model works through the queue meanwhile.
    ``reserved``: the cost it was let in at the door with, which the requests let in after it
    counted already: it overtakes them only by what it costs beyond that."""
    if not forecast.ready or math.isinf(terms.deadline):
        return Verdict(True)
    own_rank = rank(terms.priority, fair)

    def seconds(work: float) -> float:
        return forecast.seconds(work, own_rank)

    key = (own_rank, terms.deadline, math.inf)
    ahead = sum(f.queued_cost for f in flows if order_key(f, fair) < key)
    predicted = max(start_in + seconds(ahead + cost), ready_in + seconds(cost))
    late = now + forecast.margin * predicted > terms.deadline and (ahead > 0 or start_in > 0 or ready_in > 0)
    if not late and cost > reserved:
        # The requests of its priority it overtakes must still make their aims. A request let in
        # at the door was counted at its reservation by those let in after it: only what it costs
        # beyond that moves them, and they keep admission's reserve for such errors of estimate,
        # so it is refused for them only if they would then miss their deadlines. (Against their
        # aims, the last let in sits at its aim by construction: prepared requests were refused
        # for a few percent over their reservation, their preparation wasted.)
        behind = sorted((f for f in flows if order_key(f, fair) > key and rank(f.priority, fair) == own_rank),
                        key=lambda f: order_key(f, fair))
        done = ahead
        for flow in behind:
            done += flow.queued_cost
            before = now + start_in + seconds(done + reserved)
            after = now + start_in + seconds(done + cost)
            if before <= (flow.deadline if reserved else aim(flow, forecast.margin)) < after:
                late = True
                break
    if not late:
        return Verdict(True, predicted)
    # A retry joins the back of its priority: it fits once that much work has drained.
    queued = sum(f.queued_cost for f in flows if rank(f.priority, fair) <= own_rank)
    timeout = terms.timeout if math.isfinite(terms.timeout) else terms.deadline - now
    wait = max(start_in + seconds(queued + cost), ready_in + seconds(cost)) - timeout
    return Verdict(False, predicted, max(1, math.ceil(wait)))
