"""Fair scheduling between requests and priorities, in the batcher, against fake compute functions."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.engine.batching import Batcher
from server.engine.deadlines import Terms
from server.engine.fair_queue import FairQueue


class RecordingModel:
    """Records each batch's payloads; the first pass can be held so a request arrives mid-bulk."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.release = threading.Event()
        self.release.set()
        self.in_pass = threading.Event()

    def run_batch(self, payloads: list) -> list:
        self.in_pass.set()
        self.release.wait(5)
        self.batches.append(list(payloads))
        return [f"out:{p}" for p in payloads]


def make(model: RecordingModel, **kw) -> Batcher:
    opts = dict(name="fair", run_batch=model.run_batch, max_batch_cost=320, max_batch_size=32, max_queue=10_000)
    opts.update(kw)
    return Batcher(**opts)


async def _first_pass_running(model: RecordingModel, batcher: Batcher, items: list, **kw) -> list:
    """Submit ``items`` with the model held, and return once their first pass is computing."""
    model.release.clear()
    futures = batcher.submit(items, **kw)
    while not model.in_pass.is_set():
        await asyncio.sleep(0.002)
    return futures


def _pass_of(batches: list[list], payload) -> int:
    return next(i for i, batch in enumerate(batches) if payload in batch)


@pytest.mark.parametrize("bulk_items", [100, 3000])
def test_a_request_sent_while_bulk_computes_is_in_the_next_pass(bulk_items):
    async def go():
        model = RecordingModel()
        b = make(model)
        b.start()
        bulk = await _first_pass_running(model, b, [(f"bulk{i}", 10) for i in range(bulk_items)])
        query = b.submit([("query", 10)])  # the bulk's first pass is computing now
        model.release.set()
        results = await asyncio.gather(*bulk, *query)
        await b.close()
        return model.batches, results

    batches, results = asyncio.run(go())
    assert _pass_of(batches, "query") <= 2, [len(b) for b in batches[:3]]
    assert results[-1] == "out:query"
    assert sorted(p for batch in batches for p in batch) == sorted([f"bulk{i}" for i in range(bulk_items)] + ["query"])


def test_a_request_queued_behind_thousands_of_items_is_in_one_of_the_next_two_batches():
    async def go():
        model = RecordingModel()
        b = make(model)
        b.start()
        blocker = await _first_pass_running(model, b, [("blocker", 1)])
        bulk = b.submit([(f"bulk{i}", 10) for i in range(5000)])
        query = b.submit([("query", 10)])
        model.release.set()
        await asyncio.gather(*blocker, *bulk, *query)
        await b.close()
        return model.batches

    batches = asyncio.run(go())[1:]  # without the blocker's
    assert _pass_of(batches, "query") <= 1


def test_requests_share_passes_by_cost_not_by_item_count():
    """One request of short items (cost 4), one of long items (cost 32): while both wait, each gets
    about the same cost computed; counted by items, the short request would get 8 times less."""

    async def go():
        model = RecordingModel()
        b = make(model, max_batch_cost=256, max_batch_size=64, min_padding_efficiency=0.0)
        b.start()
        blocker = await _first_pass_running(model, b, [("blocker", 1)])
        short = b.submit([((f"s{i}", 4), 4) for i in range(2000)])
        long = b.submit([((f"l{i}", 32), 32) for i in range(250)])
        model.release.set()
        await asyncio.gather(*blocker, *short, *long)
        await b.close()
        return model.batches[1:]

    batches = asyncio.run(go())
    cost = {"s": 0, "l": 0}
    for batch in batches[:20]:  # both requests still have plenty left after 20 passes
        for name, c in batch:
            cost[name[0]] += c
    assert cost["s"] > 0 and cost["l"] > 0
    assert 0.6 < cost["s"] / cost["l"] < 1.6, cost


def test_grouping_by_length_still_applies_among_the_fair_share():
    """Two requests, each of interleaved short and long items: the passes stay uniform in length."""

    async def go():
        model = RecordingModel()
        b = make(model, max_batch_cost=400, max_batch_size=4)
        b.start()
        blocker = await _first_pass_running(model, b, [("blocker", 1)])
        futs = [f for r in "AB" for f in b.submit([(f"{r}{'L' if i % 2 else 'S'}{i}", 100 if i % 2 else 10)
                                                    for i in range(8)])]
        model.release.set()
        await asyncio.gather(*blocker, *futs)
        await b.close()
        return model.batches[1:]

    batches = asyncio.run(go())
    assert all(len({p[1] for p in batch}) == 1 for batch in batches), batches
    assert {p[0] for p in batches[0]} == {"A", "B"} or {p[0] for p in batches[1]} == {"A", "B"}


def test_interactive_goes_before_normal_and_background_still_progresses():
    async def go():
        model = RecordingModel()
        b = make(model, max_batch_cost=80, max_batch_size=8)
        b.start()
        blocker = await _first_pass_running(model, b, [("blocker", 1)])
        background = b.submit([(f"bg{i}", 10) for i in range(400)], Terms("background"))
        normal = b.submit([(f"n{i}", 10) for i in range(400)])
        interactive = b.submit([(f"i{i}", 10) for i in range(16)], Terms("interactive"))
        model.release.set()
        await asyncio.gather(*blocker, *background, *normal, *interactive)
        await b.close()
        return model.batches[1:]

    batches = asyncio.run(go())
    last_interactive = max(_pass_of(batches, f"i{i}") for i in range(16))
    assert last_interactive <= 2  # 16 items, 8 a pass: the first two passes are (nearly) all theirs
    # Background shares with normal work at 1/16 of its weight: it progresses while normal work waits...
    last_normal = max(_pass_of(batches, f"n{i}") for i in range(400))
    background_before = sum(p.startswith("bg") for batch in batches[:last_normal] for p in batch)
    assert 0 < background_before < 400 / 4
    # ...and in order.
    order = [int(p[2:]) for batch in batches for p in batch if p.startswith("bg")]
    assert order == sorted(order)


def test_a_flow_left_out_for_too_many_passes_heads_the_next_one():
    """A long item among a stream of short requests: the padding rule keeps it out of their passes
    and its tag lies far ahead, but it runs once its request has been passed over ``max_skipped_passes``."""
    q = FairQueue(max_skipped_passes=4)
    q.push([("long", 1000, None)])
    passes = 0
    while True:
        q.push([(f"short{passes}", 1, None)])  # a new short request arrives before every pass
        window = q.take_window(8)
        passes += 1
        chosen = [window[0]]  # the head alone, as a pass would if the long item did not fit with it
        q.give_back(window[1:])
        q.mark_served(chosen)
        if chosen[0].payload == "long":
            break
        assert passes < 50
    assert passes == 5


def test_results_do_not_depend_on_priority_or_company():
    def square(payloads):
        return [p * p for p in payloads]

    async def go():
        b = Batcher(name="sq", run_batch=square, max_batch_cost=64, max_batch_size=8, max_queue=1000)
        b.start()
        alone = await asyncio.gather(*b.submit([(7, 3)], Terms("interactive")))
        crowd = [b.submit([(i, 1 + i % 5) for i in range(200)], Terms(p)) for p in ("background", "normal")]
        mixed = b.submit([(7, 3)], Terms("interactive"))
        answers = await asyncio.gather(*mixed, *(f for fs in crowd for f in fs))
        await b.close()
        return alone, answers

    alone, answers = asyncio.run(go())
    assert alone == [49] and answers[0] == 49
    assert answers[1:] == [i * i for i in range(200)] * 2


def test_depth_and_waits_are_reported_per_priority():
    records = []

    async def go():
        model = RecordingModel()
        b = make(model, on_batch=records.append)
        b.start()
        blocker = await _first_pass_running(model, b, [("blocker", 1)])
        futs = b.submit([("bg", 1)], Terms("background")) + b.submit([("now", 1), ("now2", 1)],
                                                                         Terms("interactive"))
        depth = b.queue_depth_by_priority()
        model.release.set()
        await asyncio.gather(*blocker, *futs)
        await b.close()
        return depth, b.queue_depth_by_priority()

    depth, after = asyncio.run(go())
    assert depth == {"interactive": 2, "normal": 0, "background": 1}
    assert after == {"interactive": 0, "normal": 0, "background": 0}
    waits = [w for r in records for w in r.waits]
    assert sorted(p for p, _, _ in waits) == ["background", "interactive", "interactive", "normal"]
    assert {t for _, t, _ in waits} == {"none"}  # no API keys: no tenants
    assert all(seconds >= 0 for _, _, seconds in waits)


def test_fifo_scheduling_serves_the_oldest_first_whatever_the_priority():
    async def go():
        model = RecordingModel()
        b = make(model, fair=False)
        b.start()
        blocker = await _first_pass_running(model, b, [("blocker", 1)])
        bulk = b.submit([(f"bulk{i}", 10) for i in range(200)], Terms("background"))
        query = b.submit([("query", 10)], Terms("interactive"))
        model.release.set()
        await asyncio.gather(*blocker, *bulk, *query)
        await b.close()
        return model.batches[1:]

    batches = asyncio.run(go())
    assert _pass_of(batches, "query") == len(batches) - 1  # behind all 200: what fair scheduling fixes


def test_a_window_of_an_emptied_queue_is_empty():
    q = FairQueue()
    [item] = q.push([("gone", 1, None)]).items
    assert q.discard(item) and len(q) == 0
    assert q.take_window(8) == []


def test_a_short_request_is_not_padded_into_a_long_pass_of_another_request():
    """A 5 s clip arriving beside 30 s segments of a long recording heads the next pass; the long
    segments would fit the budget and the padding rule, but would make that pass (its latency) six
    times longer, so they wait for the next one."""

    async def go():
        model = RecordingModel()
        b = make(model, max_batch_cost=2400, max_batch_size=8, min_padding_efficiency=0.0)
        b.start()
        recording = await _first_pass_running(model, b, [(f"seg{i}", 300) for i in range(24)])
        clip = b.submit([("clip", 50)])
        model.release.set()
        await asyncio.gather(*recording, *clip)
        await b.close()
        return model.batches

    batches = asyncio.run(go())
    assert batches[1] == ["clip"]
    assert all(len(batch) == 8 for batch in batches[:1] + batches[2:])  # the recording still goes 8 a pass


def test_passes_are_bounded_by_time_once_their_cost_is_learnt():
    """1 ms per unit of padded cost: 8 items of 10 would take 80 ms; a 35 ms bound holds 3."""

    def timed(payloads):
        time.sleep(0.001 * 10 * len(payloads))
        return payloads

    async def go():
        b = Batcher(name="timed", run_batch=timed, max_batch_cost=10_000, max_batch_size=8, max_queue=1000,
                    max_pass_seconds=0.035)
        b.start()
        for size in (1, 2, 3, 4, 5, 6, 7, 8, 1, 2):  # passes of varied size: the fit learns ~1 ms a unit
            await asyncio.gather(*b.submit([(i, 10) for i in range(size)]))
        learnt = b.stats.batches
        sizes = []
        b.on_batch = lambda record: sizes.append(record.size)
        await asyncio.gather(*b.submit([(i, 10) for i in range(24)]))
        await b.close()
        return learnt, sizes

    learnt, sizes = asyncio.run(go())
    assert learnt >= 8
    assert sum(sizes) == 24 and max(sizes) <= 4 and sizes[0] >= 2, sizes


def test_lone_requests_of_equal_cost_still_fill_a_pass():
    """Eight clients each waiting on one clip: the latency stretch keeps bulk work out of a short
    request's pass, not other requests that finish in it, so all eight share one pass."""

    async def go():
        model = RecordingModel()
        b = make(model, max_batch_cost=24_000, max_batch_size=32)
        b.start()
        blocker = await _first_pass_running(model, b, [("blocker", 1)])
        clips = [f for i in range(8) for f in b.submit([(f"clip{i}", 1000)])]
        model.release.set()
        await asyncio.gather(*blocker, *clips)
        await b.close()
        return model.batches[1:]

    assert asyncio.run(go()) == [[f"clip{i}" for i in range(8)]]
