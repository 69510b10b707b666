"""Load drivers: closed-loop clients (each sends its next request when the last is answered) and
open-loop (Poisson) arrivals, timing every answer and the load generator's own CPU."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from benchlib.endpoint import Endpoint, Request


@dataclass
class Run:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    units: float = 0.0
    errors: int = 0
    client_cpu_s: float = 0.0  # this process's CPU time during the run: the load generator's

    @property
    def client_share(self) -> float:
        """The share of the machine's CPU the load generator took, which the system under test
        did not have (the offline reference had all of it)."""
        return self.client_cpu_s / (self.seconds * len(os.sched_getaffinity(0)))

    def percentile(self, q: float) -> float | None:
        lat = sorted(self.latencies)
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None


async def timed_request(ep: Endpoint, http: httpx.AsyncClient, req: Request, run: Run) -> None:
    """Send ``req``: a 200 adds its latency and units to ``run``; any other answer, or none, one error."""
    started = time.perf_counter()
    try:
        response = await ep.send(http, req)
        ok = response.status_code == 200
    except httpx.HTTPError:
        ok = False
    if ok:
        run.latencies.append(time.perf_counter() - started)
        run.units += req.units
    else:
        run.errors += 1


def http_client(ep: Endpoint, connections: int) -> httpx.AsyncClient:
    """One pool of ``connections`` for a run's clients, one each, so none waits for a connection; its
    timeout is long because a bulk request can take minutes."""
    return httpx.AsyncClient(base_url=ep.base_url, timeout=600,
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


async def closed_loop(ep: Endpoint, requests: list[Request], clients: int, deadline_s: float) -> Run:
    """`clients` clients, each sending its next request when the last one is answered."""
    queue = list(reversed(requests))
    run = Run(0.0)
    stop = time.monotonic() + deadline_s

    async def client(http: httpx.AsyncClient) -> None:
        while queue and time.monotonic() < stop:
            await timed_request(ep, http, queue.pop(), run)

    started, cpu = time.perf_counter(), cpu_seconds()
    async with http_client(ep, clients) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    run.seconds, run.client_cpu_s = time.perf_counter() - started, cpu_seconds() - cpu
    return run


def cpu_seconds() -> float:
    """This process's CPU time (user and system): the load generator's, which the server did not get."""
    times = os.times()
    return times.user + times.system


async def open_loop(ep: Endpoint, requests: list[Request], rate: float, deadline_s: float) -> Run:
    """Requests arriving at `rate` per second (Poisson, seeded) whatever the answers: offered load."""
    gaps = np.random.default_rng(7).exponential(1 / rate, len(requests))
    run = Run(0.0)
    started = time.perf_counter()
    async with http_client(ep, 256) as http:
        tasks = []
        for req, gap in zip(requests, gaps):
            await asyncio.sleep(gap)
            if time.perf_counter() - started > deadline_s:
                break
            tasks.append(asyncio.create_task(timed_request(ep, http, req, run)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=deadline_s * 2 + 60)
    run.seconds = time.perf_counter() - started
    return run
