"""The phases of an overload run on one system (benchlib/overload.py): warm-up, capacity, interactive
requests alone, the burst, the sustained load, and waiting for the system to finish between them."""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import random
import time
from collections.abc import Iterable
from dataclasses import replace

import httpx
import numpy as np

from benchlib.endpoint import Endpoint, Request
from benchlib.metrics import deadline_metrics
from benchlib.overload_client import POOL, Outcome, client, clients, pct, send
from benchlib.overload_workloads import BODIES, OverloadWorkload


async def lone(ep: Endpoint, requests: list[Request], count: int, think_s: float, limit_s: float,
               hard_stop: float, stop: asyncio.Event | None = None, seed: int = 0) -> list[Outcome]:
    """Interactive requests one at a time with a jittered think time: ``count`` of them, or until ``stop``."""
    rng, out, t0 = random.Random(seed), [], time.perf_counter()
    async with client(ep, 1, limit_s) as http:
        for req in itertools.islice(itertools.cycle(requests), count):
            if (stop is not None and stop.is_set()) or time.perf_counter() > hard_stop:
                break
            out.append(await send(ep, http, req, limit_s, t0))
            await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
    return out


async def burst(ep: Endpoint, requests: list[Request], count: int, limit_s: float) -> list[Outcome]:
    """``count`` requests at once, each on a connection of its own."""
    async with clients(ep, count, limit_s) as pools:
        t0 = time.perf_counter()
        return await asyncio.gather(*(send(ep, pools[i % len(pools)], req, limit_s, t0)
                                      for i, req in enumerate(itertools.islice(itertools.cycle(requests), count))))


async def sustained(ep: Endpoint, wl: OverloadWorkload, rate: float, seconds: float, limit_s: float,
                    think_s: float, hard_stop: float) -> tuple[list[Outcome], list[Outcome]]:
    """Bulk requests arriving at ``rate`` (Poisson, on an absolute schedule, so a slow client does not
    lower the offered load) for ``seconds``, beside one interactive client; then every answer."""
    gaps = np.random.default_rng(33).exponential(1 / rate, int(rate * seconds * 3) + 10)
    arrivals = [t for t in np.cumsum(gaps) if t < seconds]
    stop = asyncio.Event()
    quick = asyncio.create_task(lone(ep, wl.interactive, 10**6, think_s, limit_s, hard_stop, stop, seed=34))
    tasks = []
    async with clients(ep, math.ceil(rate * limit_s) + 2 * POOL, limit_s) as pools:
        t0 = time.perf_counter()
        for i, (req, at) in enumerate(zip(itertools.cycle(wl.bulk), arrivals)):
            await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            tasks.append(asyncio.create_task(send(ep, pools[i % len(pools)], req, limit_s, t0)))
        stop.set()
        bulk = await asyncio.gather(*tasks)  # each bounded by limit_s
    return list(bulk), await quick


def drain(ep: Endpoint, wl: OverloadWorkload, limit_s: float) -> float | None:
    """Wait until the system is done with the last phase; the seconds it took, None if not within
    ``limit_s``. Ours: its queue empty and its counters still for a second (requests still being
    prepared are in no queue). Then, any system: one interactive request answered, which a peer's
    fifo queue serves only after all that came before it."""
    started = time.monotonic()
    deadline = started + limit_s
    if ep.counters is not None:
        last, still_since = None, None
        while time.monotonic() < deadline:
            m = deadline_metrics(ep.base_url)
            now = (m["queue depth"], m["activity"])
            if m["queue depth"] or now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= 1.0:
                break
            time.sleep(0.2)
    probe = replace(wl.interactive[0], json={k: v for k, v in wl.interactive[0].json.items() if k != "priority"})

    async def one() -> Outcome:
        left = max(1.0, deadline - time.monotonic())
        async with client(ep, 1, left) as http:
            return await send(ep, http, probe, left, time.perf_counter())

    return time.monotonic() - started if asyncio.run(one()).status == 200 else None


async def closed(ep: Endpoint, requests: Iterable[Request], clients: int, seconds: float,
                 limit_s: float) -> tuple[list[Outcome], float]:
    """``clients`` clients, each sending its next request when the last is answered, until the
    requests run out or ``seconds`` have passed (the requests in flight then are answered)."""
    it, out, t0 = iter(requests), [], time.perf_counter()

    async def one_client(http: httpx.AsyncClient) -> None:
        for req in it:  # shared by the clients
            out.append(await send(ep, http, req, limit_s, t0))
            if time.perf_counter() - t0 > seconds:
                break

    async with client(ep, clients, limit_s) as http:
        await asyncio.gather(*(one_client(http) for _ in range(clients)))
    return out, time.perf_counter() - t0


def warm(ep: Endpoint, wl: OverloadWorkload, limit_s: float, args) -> None:
    """Half the bulk bodies and a few interactive ones alone, then every bulk body at the capacity
    run's concurrency: the first passes of each shape build their kernels, which at T's concurrency
    on a cold server can take past T."""
    alone, _ = asyncio.run(closed(ep, wl.bulk[:BODIES // 2] + wl.interactive[:4], 1, args.max_seconds, limit_s))
    out, _ = asyncio.run(closed(ep, wl.bulk, wl.capacity_clients, args.max_seconds, limit_s))
    out += alone
    failed = collections.Counter(f"{o.status} {o.code}" for o in out if o.status != 200)
    if failed:
        print(f"    warm-up: {sum(failed.values())} of {len(out)} not answered 200: {dict(failed)}", flush=True)


def capacity(ep: Endpoint, wl: OverloadWorkload, limit_s: float, args) -> dict:
    out, seconds = asyncio.run(closed(ep, itertools.cycle(wl.bulk), wl.capacity_clients,
                                      args.overload_capacity_seconds, limit_s))
    ok = [o.seconds for o in out if o.status == 200]
    return {"requests/s": len(ok) / seconds, "clients": wl.capacity_clients, "seconds": seconds,
            "requests": len(ok), "errors": len(out) - len(ok), "p50 ms": pct(ok, 0.5),
            "answers": dict(collections.Counter(f"{o.status} {o.code}" for o in out))}
