"""The dynamic batcher, written once for every model. It knows nothing about any model.

A model gives it two things: ``run_batch(payloads) -> results`` (one forward pass, called on the
model's own worker thread) and a cost per item (tokens, or audio frames). The batcher:

* takes whatever is waiting the moment the worker is free (continuous batching): a lone request
  never waits for a timer;
* bounds a batch by ``max_batch_cost`` counted with padding (rows x costliest row) and by
  ``max_batch_size``;
* is fair between requests (server.engine.fair_queue): each pass starts from the item a fair share of the
  model owes most, so a one-text query is never stuck behind a 1,000-text request, and a request's
  ``priority`` sets its share;
* groups items of similar cost inside the look-ahead window of the ``lookahead`` items the fair
  share admits next, always including the head of that order, and
  stops growing a batch before padding passes ``1 - min_padding_efficiency`` of the pass's time,
  counting the fixed cost every pass pays whatever its size, which the batcher learns from its
  own passes (ForwardTimeFit);
* refuses work past ``max_queue`` items (503 + Retry-After) instead of growing a backlog;
* with deadline scheduling (server.engine.deadlines), refuses at once a request the forecast says
  cannot be done by its deadline, serves the requests in deadline order instead of the fair one
  when the fair one would make some of them late, and fails a request as soon as it is known to be
  late, dropping its queued items;
* drops an item whose caller is gone (future cancelled) before it is computed;
* isolates failures: a batch that raises is split in halves and retried, so one bad item fails
  only its own request; CUDA out-of-memory takes the same path after freeing the cache;
* drains on close: stops accepting, finishes what is queued, then stops the worker;
* on a CPU, takes turns with request preparation (server.engine.cpu_gate), and chooses the batch once
  the pass has its turn.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from server.engine.cpu_gate import CpuGate
from server.engine.deadlines import (
    NO_DEADLINE,
    Forecast,
    Reservation,
    Terms,
    Verdict,
    judge,
    plan,
    rank,
)
from server.engine.fair_queue import FairQueue, Flow, QueuedItem
from server.engine.oom import free_cuda_cache, is_cuda_oom
from server.engine.pass_times import ForwardTimeFit
from server.engine.records import BatcherStats, BatchRecord, RequestRecord
from server.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    NonFiniteOutput,
    OutOfMemory,
    Overloaded,
    PayloadTooLarge,
    ShuttingDown,
)

log = logging.getLogger(__name__)


def model_thread(name: str) -> ThreadPoolExecutor:
    """The single worker thread a model loads on and computes on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batcher-{name}")


P = TypeVar("P")
R = TypeVar("R")
Order = Literal["fair", "deadline", "arrival"]  # the order a pass's window was taken in


@dataclass
class Batcher(Generic[P, R]):
    name: str
    run_batch: Callable[[list[P]], Sequence[R | BaseException]]
    max_batch_cost: int
    max_batch_size: int
    max_queue: int
    lookahead: int = 64
    min_padding_efficiency: float = 0.0  # efficiency a batch must keep to grow, see _efficiency
    retry_after_s: int = 1
    on_batch: Callable[[BatchRecord], None] | None = None
    is_oom: Callable[[BaseException], bool] = is_cuda_oom
    on_oom: Callable[[], None] = free_cuda_cache
    # The model's worker thread, where it was loaded (server.engine.torch_threads); None: a new one. The
    # batcher stops it on close.
    executor: ThreadPoolExecutor | None = None
    # Turns between forward passes and request preparation on a CPU (server.engine.cpu_gate); off: none.
    gate: CpuGate = field(default_factory=lambda: CpuGate(enabled=False))
    stats: BatcherStats = field(default_factory=BatcherStats)
    fair: bool = True  # False: first in, first out (server.engine.fair_queue)
    # A pass grows with other requests' items only while it takes at most this many times what the
    # head's request's own items would (fixed + padded cost): a 5 s clip is not made to wait for
    # eight 30 s segments of someone's hour of audio in its own pass.
    latency_stretch: float = 4.0
    # A pass stops growing once the fit of past passes says it would take longer than this (0: no
    # bound); the head always runs. A request arriving mid-pass waits for the pass in flight, and at
    # full size on a 2-core CPU one 240 s SenseVoice pass takes 16 s (scripts/asr_pass_time.py).
    max_pass_seconds: float = 0.0
    # Admission by forecast completion and deadline order under overload (server.engine.deadlines);
    # off: every request is queued while the queue has room, and served in the fair (or fifo) order.
    deadline_scheduling: bool = True
    on_request: Callable[[RequestRecord], None] | None = None

    def __post_init__(self) -> None:
        self._queue = FairQueue(fair=self.fair)
        self._wakeup = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._closing = False
        self._task: asyncio.Task | None = None
        # One thread per model: forward passes of one model never overlap, and never run on the loop.
        self._executor = self.executor or model_thread(self.name)
        self._times = ForwardTimeFit()
        self._forecast = Forecast(self._times)
        self._pass_budget: float = self.max_batch_cost  # this pass's: the cost budget, or less by time
        self._pass_ends_at: float = 0.0  # when the pass in flight should end, by the forecast
        self._last_pass_end: float | None = None  # when the last pass ended, if work was left queued
        self._preparing: list[Reservation] = []  # requests let in at the door, not queued yet
        # What a request being prepared will likely cost: that of the requests of its priority queued
        # lately. Per priority, as one-text interactive queries and bulk requests differ a
        # thousandfold: after a spell of queries, a burst of bulk requests was reserved at a query's
        # cost, let in at the door, prepared, and only then refused, after a wait for its turn.
        self._typical_cost: dict[str, float] = {}

    # ---- public surface -------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    def queue_depth_by_priority(self) -> dict[str, int]:
        return self._queue.depth_by_priority()

    @contextmanager
    def admission(self, terms: Terms, ready_in: float = 0.0) -> Iterator[Admission]:
        """Held from before a request is prepared (tokenized, decoded) until its items are queued
        (``Admission.submit``). Refuses at once what would be refused anyway (a full queue, or work
        ahead that outlasts the request's deadline), so a burst that cannot be served costs no
        preparation; and meanwhile counts the request at the cost requests have had lately, as
        work ahead of those that arrive while it is prepared. ``ready_in``: the seconds its
        preparation will wait for its turn, by the caller's forecast (``deadlines.judge``)."""
        if self._closing:
            raise ShuttingDown("The server is shutting down; retry on another replica.")
        if len(self._queue) >= self.max_queue:
            self._refuse_queue_full(0)
        if terms.deadline <= time.monotonic():  # its body took all its time to arrive
            raise terms.missed()
        typical = self._typical_cost.get(terms.priority, 0.0)
        self._admit(terms, typical, ready_in)
        reservation = Reservation(terms.priority, terms.deadline, typical)
        self._preparing.append(reservation)
        try:
            yield Admission(self, terms, reservation)
        finally:
            self._release(reservation)

    def _release(self, reservation: Reservation) -> None:
        if reservation in self._preparing:
            self._preparing.remove(reservation)

    def submit(self, items: Sequence[tuple[P, int]], terms: Terms = NO_DEADLINE,
               reserved: float = 0.0) -> list[asyncio.Future]:
        """Queue ``(payload, cost)`` items of one request, all or none, as one flow of the fair
        queue on ``terms``; returns one future per item. ``reserved``: the cost it was let in at
        the door with (``admission``)."""
        return [item.future for item in self._push(items, terms, reserved).items]

    def _push(self, items: Sequence[tuple[P, int]], terms: Terms, reserved: float,
              beside: Flow | None = None) -> Flow:
        if self._closing:
            raise ShuttingDown("The server is shutting down; retry on another replica.")
        if len(items) > self.max_queue:
            raise PayloadTooLarge(
                f"The request has {len(items)} items; this server queues at most {self.max_queue} per model."
            )
        if len(self._queue) + len(items) > self.max_queue:
            self._refuse_queue_full(len(items))
        costs = [max(1, int(cost)) for _, cost in items]
        verdict = self._admit(terms, sum(costs), reserved=reserved)
        typical = self._typical_cost.get(terms.priority)
        self._typical_cost[terms.priority] = 0.8 * typical + 0.2 * sum(costs) if typical else sum(costs)
        loop = asyncio.get_running_loop()
        flow = self._queue.push([(payload, cost, loop.create_future()) for (payload, _), cost in zip(items, costs)],
                                terms.priority, terms.tenant, terms.deadline, beside)
        flow.predicted_s, flow.margin = verdict.predicted_s, self._forecast.margin
        for item in flow.items:
            item.future.add_done_callback(lambda fut, it=item: self._forget_if_cancelled(it))
        self.stats.submitted += len(items)
        self._wakeup.set()
        return flow

    def pause(self) -> None:
        """Hold new batches (the one computing finishes). For tests and maintenance; work still queues."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, finish what is queued (up to ``timeout`` seconds), then stop the worker."""
        self._closing = True
        self._wakeup.set()
        self._running.set()  # a paused batcher still drains
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                log.warning("%s: drain timed out with %d items queued", self.name, len(self._queue))
                self._task.cancel()
                for item in self._queue.drain():
                    if not item.future.done():
                        item.future.set_exception(ShuttingDown("The server shut down before this item ran."))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- admission -------------------------------------------------------------------------------

    def _refuse_queue_full(self, items: int) -> None:
        self.stats.rejected += items
        self.stats.refused_queue_full += 1
        raise Overloaded(f"The {self.name} queue is full; retry shortly.", self.retry_after_s)

    def _admit(self, terms: Terms, cost: float, ready_in: float = 0.0, reserved: float = 0.0) -> Verdict:
        if not self.deadline_scheduling:
            return Verdict(True)
        now = time.monotonic()
        verdict = judge([*self._queue.flows(), *self._preparing], terms, cost, self._forecast,
                        self._start_in(now), self.fair, now, ready_in, reserved)
        if verdict.admitted:
            return verdict
        self.stats.refused_deadline += 1
        raise Overloaded(
            f"The {self.name} model cannot finish this request within its {terms.timeout:g} s deadline with the "
            f"work queued now (about {verdict.predicted_s:.1f} s); retry after {verdict.retry_after_s} s or on "
            "another replica.", verdict.retry_after_s)

    def _start_in(self, now: float) -> float:
        """Seconds until the model is free of the pass in flight, by the forecast."""
        return max(0.0, self._pass_ends_at - now)

    def _drop_doomed(self, flows: list[Flow], now: float) -> None:
        for flow in flows:
            for item in self._queue.drop(flow):
                self.stats.dropped += 1
                if not item.future.done():
                    item.future.set_exception(DeadlineExceeded(
                        f"The {self.name} model can no longer finish this request within its deadline; it was "
                        "dropped before its remaining work was computed. Retry later or on another replica.",
                        self.retry_after_s))
                self._resolve(item, now, doomed=True)

    def _resolve(self, item: QueuedItem, now: float, doomed: bool = False) -> None:
        """An item is done with (computed, dropped or cancelled); on a request's last, record how
        its deadline went."""
        flow = item.flow
        flow.doomed = flow.doomed or doomed
        flow.gone = flow.gone or item.future.cancelled()
        if not self._queue.resolve(item) or not self.deadline_scheduling:
            return
        late = flow.doomed or now > flow.deadline
        if flow.gone and not late:
            met = None  # its caller left in time: no deadline to judge
        else:
            met = not late
            if met:
                self.stats.deadline_met += 1
            else:
                self.stats.deadline_missed += 1
                self.stats.doomed += flow.doomed
            if flow.predicted_s is not None and flow.predicted_s > (flow.deadline - flow.arrived) / 4:
                self._forecast.judged(met, flow.margin)  # let into a real queue: the margin let it in
        if self.on_request is not None:
            completed = not flow.doomed and not flow.gone
            self.on_request(RequestRecord(met, flow.predicted_s, now - flow.arrived if completed else None))

    # ---- worker loop ----------------------------------------------------------------------------

    def _forget_if_cancelled(self, item: QueuedItem) -> None:
        if item.future.cancelled() and self._queue.discard(item):
            self.stats.dropped += 1
            self._resolve(item, time.monotonic())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._running.wait()
            # The batch is chosen once the pass has its turn: what was prepared meanwhile joins it.
            async with self.gate.forward_pass():
                batch = self._next_batch()
                if not batch:
                    continue
                started = time.perf_counter()
                expected = self._forecast.seconds(sum(it.cost for it in batch)) if self._forecast.ready else 0.0
                self._pass_ends_at = time.monotonic() + expected
                try:
                    results = await loop.run_in_executor(self._executor, self._run_isolated, [i.payload for i in batch])
                except Exception as err:  # a bug in the batcher itself: fail the batch, keep serving
                    log.exception("%s: batch failed outside the model", self.name)
                    results = [err] * len(batch)
                except asyncio.CancelledError:  # a drain that timed out: its callers still get an answer
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(ShuttingDown("The server shut down before this item ran."))
                    raise
                seconds = time.perf_counter() - started
                self._pass_ends_at = 0.0  # nothing in flight
            self._deliver(batch, results, seconds)

    def _window(self) -> tuple[list[QueuedItem], Order]:
        """The next ``lookahead`` items, in the fair order, or in deadline order when the fair one
        would make a request late (server.engine.deadlines), or in arrival order (fifo); and which.
        Requests that can no longer make their deadlines are failed here."""
        if self.deadline_scheduling and self._forecast.ready:
            now = time.monotonic()
            flows = self._queue.flows()
            schedule = plan(flows, self._forecast, 0.0, self.fair, now)
            self._drop_doomed(schedule.doomed, now)
            next_pass = self._forecast.seconds(min(self._pass_budget, sum(f.queued_cost for f in schedule.order)))
            if schedule.slack < next_pass:
                return self._queue.take_from(schedule.order, self.lookahead), "deadline"
        return self._queue.take_window(self.lookahead), "fair" if self.fair else "arrival"

    def _next_batch(self) -> list[QueuedItem]:
        """The head of the window (server.engine.fair_queue's order, or the deadline order) and the
        items among it that add the least padding, each request first up to its fair share of the pass."""
        self._pass_budget = min(self.max_batch_cost, self._times.padded_within(self.max_pass_seconds)
                                if self.max_pass_seconds else math.inf)
        self._forecast.pass_budget = self._pass_budget
        taken, order = self._window()
        window = [it for it in taken if not it.future.done()]  # done: cancelled, its callback not run yet
        self.stats.dropped += len(taken) - len(window)
        now = time.monotonic()
        for item in taken:
            if item.future.done():
                self._resolve(item, now)
        if not window:
            return []
        head = window[0]
        if order == "fair":
            seats = Counter(it.flow for it in self._fair_share(window))
        elif order == "deadline":
            # Time is short: the request the deadline order serves first has its items computed
            # first, whatever their lengths; the pass fills up by length after them. By length
            # alone, others' items that matched the head's filled the pass, the head's request
            # got an item or two a pass, and requests about to end missed their deadlines.
            seats = Counter(it.flow for it in window if it.flow is head.flow)
        else:
            seats = Counter()
        seats[head.flow] -= 1
        rest = sorted(window[1:], key=lambda it: it.cost)
        chosen, longest, total = [head], head.cost, head.cost
        own_rows, own_longest = 1, head.cost  # the head's request's share of the pass
        bulk = self._needing_more_passes(rest)
        fixed = self._times.fixed_cost
        self.stats.fixed_cost = fixed
        while len(chosen) < self.max_batch_size:
            # The head's request waits for the whole pass: items of requests with more work queued
            # beyond this window (bulk work, which needs later passes anyway) join only while the
            # pass takes at most latency_stretch times what the head's own items would alone.
            # Requests that finish in this pass (many lone clips) batch freely, as they always did.
            cap = self.latency_stretch * (fixed + own_rows * own_longest) - fixed if order == "fair" else math.inf
            allowed = [it for it in rest if it.flow is head.flow or it.flow not in bulk
                       or (len(chosen) + 1) * max(longest, it.cost) <= cap]
            # A request's items that match the batch's lengths best fill its seats; then any item.
            seated = [it for it in allowed if seats[it.flow] > 0]
            pick = (self._least_padding(seated, len(chosen), longest, total, fixed)
                    or self._least_padding(allowed, len(chosen), longest, total, fixed))
            if pick is None:
                break
            rest.remove(pick)
            seats[pick.flow] -= 1
            chosen.append(pick)
            longest, total = max(longest, pick.cost), total + pick.cost
            if pick.flow is head.flow:
                own_rows, own_longest = own_rows + 1, max(own_longest, pick.cost)
        self._queue.give_back(rest)
        self._queue.mark_served(chosen)
        return chosen

    def _needing_more_passes(self, items: list[QueuedItem]) -> set:
        """The requests among ``items`` that cannot finish in one pass: more of them is queued, or
        what is here exceeds the pass's budget."""
        cost: Counter = Counter()
        for item in items:
            cost[item.flow] += item.cost
        return {flow for flow, total in cost.items() if flow.front() is not None or total > self._pass_budget}

    def _fair_share(self, window: list[QueuedItem]) -> list[QueuedItem]:
        """What the pass would hold if it took the fair order as it stands, lengths aside: the head
        and the items after it while they fit the budget unpadded."""
        share: list[QueuedItem] = []
        cost = 0
        for item in window[: self.max_batch_size]:
            cost += item.cost
            if share and cost > self._pass_budget:
                break
            share.append(item)
        return share

    def _least_padding(self, candidates: list[QueuedItem], rows: int, longest: int, total: int,
                       fixed: float) -> QueuedItem | None:
        """Of ``candidates`` (sorted by cost), the item that adds the least padding and still fits:
        the costliest no longer than ``longest`` (its own row pads up to it), or the cheapest longer
        one (every row so far pads up to it)."""
        costs = [it.cost for it in candidates]
        above = bisect.bisect_right(costs, longest)
        shorter = candidates[bisect.bisect_left(costs, costs[above - 1])] if above else None  # first of equals
        longer = candidates[above] if above < len(candidates) else None
        fits_short = shorter is not None and self._fits(rows + 1, longest, total + shorter.cost, fixed)
        fits_long = longer is not None and self._fits(rows + 1, longer.cost, total + longer.cost, fixed)
        if shorter is not None and fits_short and (
                longer is None or not fits_long or longest - shorter.cost <= rows * (longer.cost - longest)):
            return shorter
        return longer if fits_long else None

    def _fits(self, rows: int, longest: int, real: int, fixed: float) -> bool:
        """Within this pass's padded budget (by cost, and by time), and padding stays a small share
        of the pass's time, which is ``fixed + padded`` in cost units. On a CPU a padded token costs what a real one does, so a
        batch of long items that is mostly padding is slower than no batch at all; for short items
        the fixed cost dominates, and a little padding buys a much larger batch."""
        padded = rows * longest
        efficiency = (real + fixed) / (padded + fixed)  # 1 - padding's share of the time
        return padded <= self._pass_budget and efficiency >= self.min_padding_efficiency

    def _run_isolated(self, payloads: list[P]) -> list[R | BaseException]:
        """Runs on the worker thread. A failing batch is bisected until the failing items stand alone.

        The halves run after the ``except`` block has ended: an exception's traceback holds the
        frames of the failed pass, and with them its tensors, so halves run inside the handler
        would find the memory the failed pass took still allocated (and fail again near capacity).
        The cache is emptied only then, once those tensors are gone."""
        try:
            results = list(self.run_batch(payloads))
        except Exception as err:
            failure: BaseException | None = err
            oom = self.is_oom(err)
        else:
            if len(results) == len(payloads):
                for result in results:
                    if isinstance(result, BaseException):  # an item the model itself refused
                        log.error("%s: item failed: %s", self.name, result)
                return results
            failure = RuntimeError(f"run_batch returned {len(results)} results for {len(payloads)} items")
            oom = False
        if oom:
            failure = None  # the last reference to the failed pass's frames
            self.on_oom()
        if len(payloads) == 1:
            if oom:
                return [OutOfMemory("This input does not fit in accelerator memory, even alone.")]
            assert failure is not None  # not an out-of-memory: the pass raised or miscounted
            log.error("%s: item failed: %r", self.name, failure, exc_info=failure)
            return [failure.with_traceback(None)]  # the caller gets the error, not the pass's frames
        if oom:
            self.stats.oom_splits += 1
        failure = None
        mid = len(payloads) // 2
        return self._run_isolated(payloads[:mid]) + self._run_isolated(payloads[mid:])

    def _deliver(self, batch: list[QueuedItem], results: Sequence[Any], seconds: float) -> None:
        failed = 0
        now = time.monotonic()
        for item, result in zip(batch, results):
            if isinstance(result, BaseException):
                failed += 1
                self.stats.non_finite += isinstance(result, NonFiniteOutput)
            if not item.future.done():  # done: cancelled while computing; completing it again would raise
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            self._resolve(item, now)
        self.stats.batches += 1
        self.stats.computed += len(batch)
        self.stats.failed += failed
        costs = [it.cost for it in batch]
        waits = [(it.flow.priority, it.flow.tenant.label, now - it.queued_at) for it in batch]
        record = BatchRecord(len(batch), len(batch) * max(costs), sum(costs), seconds, waits)
        self.stats.real_cost += record.real_cost
        self.stats.padded_cost += record.padded_cost
        self.stats.busy_seconds += seconds
        if not failed:
            self._times.add(record.padded_cost, seconds)
            self._learn(batch, record, seconds, now)
        if self.on_batch is not None:
            self.on_batch(record)

    def _learn(self, batch: list[QueuedItem], record: BatchRecord, seconds: float, now: float) -> None:
        """The forecast's inputs: wall time per real cost while busy, how much passes pad, and
        how the model's time went to each priority."""
        forecast = self._forecast
        busy_since = self._last_pass_end
        if busy_since is not None:
            forecast.rate.add(now - busy_since, record.real_cost)
            # Only while work waits does a higher priority's pass take time from a lower one:
            # lone queries on an idle model overtake nothing.
            by_rank: Counter[int] = Counter()
            for item in batch:
                by_rank[rank(item.flow.priority, self.fair)] += item.cost
            forecast.learn(by_rank)
        else:
            forecast.rate.add(seconds, record.real_cost, busy=False)
        forecast.padding = 0.9 * forecast.padding + 0.1 * record.padded_cost / record.real_cost
        self._last_pass_end = now if self._queue else None


class Admission:
    """A request let in at the door (``Batcher.admission``) while it is prepared."""

    def __init__(self, batcher: Batcher, terms: Terms, reservation: Reservation):
        self.terms = terms
        self._batcher = batcher
        self._reservation = reservation
        self._first: Flow | None = None

    def submit(self, items: Sequence[tuple[Any, int]]) -> list[asyncio.Future]:
        """Queue the request's items on its terms (``Batcher.submit``), in place of its reservation.
        A request may submit more than once (an upload, segments as it is read): each later part
        shares the first part's place in the fair order."""
        self._batcher._release(self._reservation)
        flow = self._batcher._push(items, self.terms, self._reservation.queued_cost, beside=self._first)
        self._first = self._first or flow
        return [item.future for item in flow.items]


async def gather_results(
    futures: list[asyncio.Future],
    terms: Terms,
    is_gone: Callable[[], Awaitable[bool]] | None = None,
    poll_s: float = 0.25,
) -> list:
    """Await a request's item futures; cancel them all (so queued items are dropped) if the caller
    is gone or its deadline passes (504). The first failing item's error is raised."""
    pending = set(futures)
    try:
        while pending:
            left = terms.deadline - time.monotonic()
            if left <= 0:
                raise terms.missed()
            _, pending = await asyncio.wait(pending, timeout=min(poll_s, left))
            if pending and is_gone is not None and await is_gone():
                raise ClientDisconnected("The client closed the connection.")
        return [f.result() for f in futures]
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
            elif not f.cancelled():
                f.exception()  # seen: the caller gets the first failure, not a "never retrieved" log each
