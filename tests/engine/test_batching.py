"""The batcher alone, against fake compute functions: fast and deterministic."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.engine.batching import Batcher, ForwardTimeFit, gather_results
from server.engine.deadlines import Terms
from server.errors import (
    OutOfMemory,
    Overloaded,
    PayloadTooLarge,
    ShuttingDown,
    Timeout,
)


class FakeModel:
    """Records every batch; can be held at a gate so that work piles up in the queue."""

    def __init__(self, fail_on: object = None):
        self.batches: list[list] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on = fail_on

    def run_batch(self, payloads: list) -> list:
        self.gate.wait(5)
        self.threads.add(threading.get_ident())
        if self.fail_on is not None and self.fail_on in payloads:
            raise ValueError("bad item")
        self.batches.append(list(payloads))
        return [f"done:{p}" for p in payloads]


def make(model: FakeModel, **kw) -> Batcher:
    opts = dict(name="fake", run_batch=model.run_batch, max_batch_cost=100, max_batch_size=8, max_queue=64)
    opts.update(kw)
    return Batcher(**opts)


def run(coro):
    return asyncio.run(coro)


async def _hold(model: FakeModel, batcher: Batcher):
    """Occupy the worker with one blocker item, so everything submitted next waits in the queue."""
    model.gate.clear()
    blocker = batcher.submit([("blocker", 1)])
    while batcher.queue_depth:  # the worker has taken the blocker and now waits at the gate
        await asyncio.sleep(0.005)
    return blocker


def test_lone_request_runs_at_once_and_off_the_event_loop():
    async def go():
        model = FakeModel()
        b = make(model)
        b.start()
        [fut] = b.submit([("a", 5)])
        assert await asyncio.wait_for(fut, 2) == "done:a"
        await b.close()
        return model

    loop_thread = threading.get_ident()
    model = run(go())
    assert model.batches == [["a"]]  # not held back to fill a batch
    assert loop_thread not in model.threads


def _queued_then_run(items: list[tuple[str, int]], **opts) -> tuple[Batcher, list, list[list]]:
    """Submit ``items`` while the worker is held, release it, and return the batcher, the items'
    results and the batches they ran in (without the blocker's)."""
    model = FakeModel()

    async def go():
        b = make(model, **opts)
        b.start()
        blocker = await _hold(model, b)
        futs = b.submit(items)
        model.gate.set()
        results = await asyncio.gather(*blocker, *futs)
        await b.close()
        return b, results[1:]

    b, results = run(go())
    return b, results, [batch for batch in model.batches if batch != ["blocker"]]


def test_batches_respect_padded_budget_and_size():
    costs = [30, 10, 45, 5, 20, 25, 50, 10, 15, 40, 5, 35]
    b, _, batches = _queued_then_run([(f"i{i}", c) for i, c in enumerate(costs)], max_batch_cost=100, max_batch_size=4)
    cost = {f"i{i}": c for i, c in enumerate(costs)}
    assert sorted(p for batch in batches for p in batch) == sorted(cost)  # each item computed exactly once
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) * max(cost[p] for p in batch) <= 100
    assert b.stats.real_cost == sum(costs) + 1  # + the blocker
    assert b.stats.padded_cost == 1 + sum(len(batch) * max(cost[p] for p in batch) for batch in batches)


def test_an_item_costlier_than_the_budget_runs_alone():
    # The budget bounds batches, not items (on CPU it is smaller than the longest accepted input).
    _, results, batches = _queued_then_run([("small-1", 10), ("huge", 300), ("small-2", 10)],
                                           max_batch_cost=100, max_batch_size=8)
    assert results == ["done:small-1", "done:huge", "done:small-2"]
    assert ["huge"] in batches
    assert sorted(p for batch in batches for p in batch) == ["huge", "small-1", "small-2"]


def test_similar_lengths_are_grouped_within_the_window():
    async def go():
        model = FakeModel()
        b = make(model, max_batch_cost=400, max_batch_size=4)
        b.start()
        blocker = await _hold(model, b)
        # Interleaved long (100) and short (10) items: FIFO batches would pad every short row to 100.
        futs = b.submit([(f"{'L' if i % 2 else 'S'}{i}", 100 if i % 2 else 10) for i in range(8)])
        model.gate.set()
        await asyncio.gather(*blocker, *futs)
        await b.close()
        return model

    model = run(go())
    batches = [batch for batch in model.batches if batch != ["blocker"]]
    assert all(len({p[0] for p in batch}) == 1 for batch in batches), batches


def test_a_batch_stops_growing_before_padding_dominates():
    async def go():
        model = FakeModel()
        b = make(model, max_batch_cost=10_000, max_batch_size=8, min_padding_efficiency=0.85)
        b.start()
        blocker = await _hold(model, b)
        futs = b.submit([("long", 100), ("s1", 10), ("mid", 90), ("s2", 12), ("s3", 11)])
        model.gate.set()
        await asyncio.gather(*blocker, *futs)
        await b.close()
        return model, b

    model, b = run(go())
    batches = [sorted(batch) for batch in model.batches if batch != ["blocker"]]
    assert batches == [["long", "mid"], ["s1", "s2", "s3"]]
    assert b.stats.real_cost / b.stats.padded_cost >= 0.85


def test_forward_time_fit_learns_the_fixed_cost_of_a_pass():
    fit = ForwardTimeFit()
    for padded in [10, 50, 200, 30, 400, 80, 120, 60, 250, 15]:
        fit.add(padded, 0.020 + 0.0001 * padded)  # 20 ms per pass + 0.1 ms per unit: fixed = 200 units
    assert fit.fixed_cost == pytest.approx(200, rel=1e-6)
    same_size = ForwardTimeFit()
    for seconds in [0.03, 0.05, 0.04, 0.06, 0.03, 0.05, 0.04, 0.06]:
        same_size.add(100, seconds)  # no spread in size: no slope to read, so no fixed cost assumed
    assert same_size.fixed_cost == 0.0


def test_a_large_fixed_cost_lets_short_items_of_different_lengths_share_a_pass():
    """Padding 10 to 20 tokens is 40% waste by tokens, but next to a pass's fixed cost it is little:
    once the batcher has learnt that cost from its own passes, the short items go together."""

    async def go():
        model = FakeModel()
        original = model.run_batch

        def timed(payloads):  # 30 ms per pass plus 0.1 ms per padded unit: fixed cost ~300 units
            costs = [p[1] if isinstance(p, tuple) else 1 for p in payloads]  # the blocker is a bare string
            time.sleep(0.03 + 0.0001 * max(costs) * len(costs))
            return original(payloads)

        b = make(model, run_batch=timed, max_batch_cost=10_000, max_batch_size=8, min_padding_efficiency=0.85)
        b.start()
        for i, cost in enumerate([10, 200, 40, 400, 20, 100, 300, 60, 150, 30]):  # learn the pass times
            await asyncio.gather(*b.submit([((f"warm{i}", cost), cost)]))
        blocker = await _hold(model, b)
        futs = b.submit([((name, cost), cost) for name, cost in [("s1", 10), ("s2", 20), ("s3", 14), ("s4", 18)]])
        model.gate.set()
        await asyncio.gather(*blocker, *futs)
        await b.close()
        return model, b

    model, b = run(go())
    assert b.stats.fixed_cost == pytest.approx(300, rel=0.3)
    assert sorted(name for name, _ in model.batches[-1]) == ["s1", "s2", "s3", "s4"]


def test_oldest_item_is_never_overtaken_beyond_the_window():
    async def go():
        model = FakeModel()
        b = make(model, max_batch_cost=1000, max_batch_size=4, lookahead=8)
        b.start()
        blocker = await _hold(model, b)
        # One long item first, then many short ones that would all be "better" batch mates of each other.
        futs = b.submit([("long", 500)] + [(f"s{i}", 5) for i in range(20)])
        model.gate.set()
        await asyncio.gather(*blocker, *futs)
        await b.close()
        return model

    model = run(go())
    batches = [batch for batch in model.batches if batch != ["blocker"]]
    assert "long" in batches[0]
    # Shorts leave in arrival order windows: no short item waits behind more than lookahead later ones.
    order = [p for batch in batches for p in batch if p != "long"]
    for position, name in enumerate(order):
        assert int(name[1:]) <= position + 8


def test_cancelled_items_are_dropped_before_compute():
    async def go():
        model = FakeModel()
        b = make(model)
        b.start()
        blocker = await _hold(model, b)
        keep, gone = b.submit([("keep", 5), ("gone", 5)])
        gone.cancel()
        await asyncio.sleep(0)
        model.gate.set()
        await asyncio.gather(*blocker, keep)
        await b.close()
        return model, b

    model, b = run(go())
    assert all("gone" not in batch for batch in model.batches)
    assert b.stats.dropped == 1
    assert b.stats.submitted == 3 and b.stats.computed == 2


def test_an_error_in_one_item_fails_only_that_item_and_the_worker_goes_on():
    async def go():
        model = FakeModel(fail_on="bad")
        b = make(model)
        b.start()
        blocker = await _hold(model, b)
        futs = b.submit([("ok1", 5), ("bad", 5), ("ok2", 5)])
        model.gate.set()
        results = await asyncio.gather(*blocker, *futs, return_exceptions=True)
        later = await asyncio.wait_for(b.submit([("after", 5)])[0], 2)
        await b.close()
        return results, later, b

    results, later, b = run(go())
    assert results[1] == "done:ok1" and results[3] == "done:ok2"
    assert isinstance(results[2], ValueError)
    assert later == "done:after"
    assert b.stats.failed == 1


class FakeOOM(RuntimeError):
    pass


def test_out_of_memory_splits_the_batch_and_retries():
    freed = []

    def run_batch(payloads):
        if sum(payloads) > 20:  # "memory" holds 20 units
            raise FakeOOM("CUDA out of memory")
        return [p * 2 for p in payloads]

    async def go():
        b = Batcher(name="oom", run_batch=run_batch, max_batch_cost=10_000, max_batch_size=16, max_queue=64,
                    is_oom=lambda e: isinstance(e, FakeOOM), on_oom=lambda: freed.append(1))
        b.start()
        futs = b.submit([(v, 1) for v in (5, 5, 5, 5, 5, 5, 25)])
        results = await asyncio.gather(*futs, return_exceptions=True)
        await b.close()
        return results, b

    results, b = run(go())
    assert results[:6] == [10] * 6
    assert isinstance(results[6], OutOfMemory)  # 25 never fits, even alone
    assert b.stats.oom_splits >= 1 and freed


def test_out_of_memory_halves_run_once_the_failed_pass_has_let_go_of_its_memory():
    """The failed pass's tensors are referenced by the exception's traceback: the halves must run
    (and the cache be emptied) only once that is gone, or near capacity they fail again."""
    import gc
    import weakref

    import torch

    alive_at_retry, alive_at_flush, held = [], [], []

    def run_batch(payloads):
        if held:
            alive_at_retry.append(held[-1]() is not None)
        if len(payloads) > 2:
            activations = torch.empty(16 * 2**20)  # 64 MiB the pass allocated before failing
            held.append(weakref.ref(activations))
            raise FakeOOM("CUDA out of memory")
        return payloads

    async def go():
        b = Batcher(name="oom", run_batch=run_batch, max_batch_cost=10_000, max_batch_size=16, max_queue=64,
                    is_oom=lambda e: isinstance(e, FakeOOM),
                    on_oom=lambda: alive_at_flush.append(held[-1]() is not None))
        b.start()
        futs = b.submit([(v, 1) for v in range(8)])
        results = await asyncio.gather(*futs)
        await b.close()
        return results

    gc.disable()  # no collector run may rescue a leak: the traceback must be dropped, not collected
    try:
        assert run(go()) == list(range(8))
    finally:
        gc.enable()
    assert alive_at_retry and not any(alive_at_retry)
    assert alive_at_flush and not any(alive_at_flush)


def test_allocation_failures_from_cublas_and_cudnn_count_as_out_of_memory():
    from server.engine.oom import is_cuda_oom

    assert is_cuda_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_cuda_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_cuda_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_cuda_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_cuda_oom(ValueError("CUDA out of memory"))  # only the errors torch raises


def test_full_queue_refuses_the_whole_request_with_retry_after():
    async def go():
        model = FakeModel()
        b = make(model, max_queue=4)
        b.start()
        blocker = await _hold(model, b)
        b.submit([("a", 1), ("b", 1), ("c", 1)])
        with pytest.raises(Overloaded) as err:
            b.submit([("d", 1), ("e", 1)])
        depth = b.queue_depth
        with pytest.raises(PayloadTooLarge):
            b.submit([(i, 1) for i in range(5)])  # could never fit: not a retryable 503
        model.gate.set()
        await asyncio.gather(*blocker)
        await b.close()
        return err.value, depth

    err, depth = run(go())
    assert err.status == 503 and err.headers["Retry-After"] == "1"
    assert depth == 3  # nothing of the refused request was queued


def test_close_drains_the_queue_then_refuses_new_work():
    async def go():
        model = FakeModel()
        b = make(model, max_batch_size=2)
        b.start()
        blocker = await _hold(model, b)
        futs = b.submit([(f"q{i}", 5) for i in range(7)])
        closing = asyncio.create_task(b.close(timeout=5))
        await asyncio.sleep(0.01)
        with pytest.raises(ShuttingDown):
            b.submit([("late", 1)])
        model.gate.set()
        await closing
        return [f.result() for f in futs], blocker[0].result()

    results, blocked = run(go())
    assert results == [f"done:q{i}" for i in range(7)]
    assert blocked == "done:blocker"


def test_a_failed_pass_is_reported_too():
    async def go():
        records = []
        b = make(FakeModel(fail_on="bad"), on_batch=records.append)
        b.start()
        with pytest.raises(ValueError):
            await b.submit([("bad", 1)])[0]
        await b.close()
        return records

    assert [r.size for r in run(go())] == [1]


def test_a_drain_that_times_out_answers_every_caller_also_the_pass_in_flight():
    async def go():
        model = FakeModel()
        b = make(model)
        b.start()
        blocker = await _hold(model, b)  # computing, held at the gate past the drain's timeout
        queued = b.submit([("q", 5)])
        await b.close(timeout=0.05)
        model.gate.set()
        return await asyncio.wait_for(asyncio.gather(*blocker, *queued, return_exceptions=True), 2)

    assert all(isinstance(r, ShuttingDown) for r in run(go()))


def test_gather_results_times_out_and_drops_the_queued_items():
    async def go():
        model = FakeModel()
        b = make(model)
        b.start()
        blocker = await _hold(model, b)
        futs = b.submit([("slow", 5)])
        with pytest.raises(Timeout):
            await gather_results(futs, Terms.within(0.05))
        await asyncio.sleep(0)
        model.gate.set()
        await asyncio.gather(*blocker)
        await b.close()
        return model, b

    model, b = run(go())
    assert all("slow" not in batch for batch in model.batches)
    assert b.stats.dropped == 1


def test_gather_results_cancels_when_the_client_is_gone():
    async def go():
        model = FakeModel()
        b = make(model)
        b.start()
        blocker = await _hold(model, b)
        futs = b.submit([("x", 5)])

        async def gone() -> bool:
            return True

        with pytest.raises(Exception) as err:
            await gather_results(futs, Terms.within(5), is_gone=gone, poll_s=0.01)
        model.gate.set()
        await asyncio.gather(*blocker)
        await b.close()
        return err.value, b

    err, b = run(go())
    assert err.status == 499 and b.stats.dropped == 1
