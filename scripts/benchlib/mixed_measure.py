"""Measuring interactive beside bulk (benchlib/mixed.py) on one system: the three phases (the
interactive clients alone, the bulk alone, both at once), their latencies and throughputs, the
forward pass they are judged against, and each system's verdicts over the rounds."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchlib import load, tables
from benchlib.endpoint import Endpoint, Request, System
from benchlib.load import Run
from benchlib.metrics import PassMeter
from benchlib.mixed_workloads import WORKLOADS, MixedWorkload, with_priority
from benchlib.our_server import our_server

FAIR, PRIORITIES, FIFO = "server (fair)", "server (fair, priorities)", "server (fifo)"
MAX_BULK_SENDS = 1000


def systems(kind: str, model_dir: Path, args) -> list[System]:
    def ours(name: str, scheduling: str) -> Callable[[], AbstractContextManager[Endpoint]]:
        # Named explicitly: the server would otherwise take INFERENCE_BATCH_SCHEDULING from this environment.
        return lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.dtype, name=name,
                                  extra=("--batch-scheduling", scheduling))

    found = [System(FAIR, ours(FAIR, "fair")), System(PRIORITIES, ours(PRIORITIES, "fair"), priorities=True),
             System(FIFO, ours(FIFO, "fifo"))]
    if args.peers:
        from benchlib import peers

        start = peers.installed_peer(kind, model_dir, args.peers_dir)
        if start is not None:
            found.append(System("peer", start))
    return found


@dataclass
class Phase:
    """What one phase ran: the interactive clients, the bulk client, or both at once."""

    interactive: Run | None
    bulk: Run | None


async def bulk_client(ep: Endpoint, http: httpx.AsyncClient, requests: list[Request], run: Run,
                      limit_s: float, hard_stop: float) -> None:
    """Bulk requests back to back. The next goes only if it should end within ``limit_s`` (judging by
    the last one's time), so the phase lasts whole requests: throughput counts no request in part."""
    started, last_s = time.perf_counter(), 0.0
    for sent_count, req in enumerate(itertools.islice(itertools.cycle(requests), MAX_BULK_SENDS)):
        sent = time.perf_counter()
        if sent_count and (sent - started + last_s > limit_s or sent > hard_stop):
            break
        errors = run.errors
        await load.timed_request(ep, http, req, run)
        if run.errors > errors:
            break  # a bulk request refused would be refused again: no throughput to measure
        last_s = time.perf_counter() - sent
    run.seconds = time.perf_counter() - started


async def interactive_client(ep: Endpoint, http: httpx.AsyncClient, requests: list[Request], run: Run,
                             done: Callable[[], bool], think_s: float, seed: int, max_sends: int) -> None:
    rng = random.Random(seed)
    # Each client from its own offset, with a jittered think time: clients in lockstep would batch together.
    start = seed % len(requests)
    for req in itertools.islice(itertools.cycle(requests[start:] + requests[:start]), max_sends):
        if done():
            break
        await load.timed_request(ep, http, req, run)
        await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))


async def run_phase(ep: Endpoint, wl: MixedWorkload, args, *, interactive: bool, bulk: bool,
                    priorities: bool) -> Phase:
    """About --mixed-seconds of the interactive clients, or of the bulk client, or of both: then the
    interactive clients stop when the bulk is done, so all of the bulk runs beside them."""
    quick, heavy = wl.interactive, wl.bulk
    if priorities:
        quick, heavy = with_priority(quick, "interactive"), with_priority(heavy, "background")
    phase = Phase(Run(0.0) if interactive else None, Run(0.0) if bulk else None)
    started = time.perf_counter()
    hard_stop = started + args.max_seconds
    think_s = args.mixed_think_ms / 1000
    max_sends = int(args.max_seconds / max(think_s / 2, 1e-3)) + 1
    bulk_done = asyncio.Event()

    def interactive_done() -> bool:
        now = time.perf_counter()
        return now > hard_stop or (bulk_done.is_set() if bulk else now - started > args.mixed_seconds)

    async def bulk_then_signal(http: httpx.AsyncClient) -> None:
        try:
            await bulk_client(ep, http, heavy, phase.bulk, args.mixed_seconds, hard_stop)
        finally:
            bulk_done.set()

    async with load.http_client(ep, args.mixed_clients + 1) as http:
        tasks = [bulk_then_signal(http)] if bulk else []
        if interactive:
            tasks += [interactive_client(ep, http, quick, phase.interactive, interactive_done, think_s, seed, max_sends)
                      for seed in range(args.mixed_clients)]
        await asyncio.gather(*tasks)
    if phase.interactive is not None:
        phase.interactive.seconds = time.perf_counter() - started
    return phase


def ms(run: Run, q: float) -> float:
    # inf rather than None where nothing was answered: rows are sorted and compared on these.
    value = run.percentile(q)
    return math.inf if value is None else value


def measure(ep: Endpoint, system: System, wl: MixedWorkload, args) -> dict:
    asyncio.run(load.closed_loop(ep, wl.warm, len(wl.warm), args.max_seconds))
    phase = lambda **kw: asyncio.run(run_phase(ep, wl, args, priorities=system.priorities, **kw))  # noqa: E731
    alone = phase(interactive=True, bulk=False).interactive
    meter = PassMeter(ep)
    meter.start()
    bulk_alone = phase(interactive=False, bulk=True).bulk
    passes = meter.stop()
    beside = phase(interactive=True, bulk=True)
    rate = lambda run: run.units / run.seconds  # noqa: E731
    return {
        "system": ep.name if system.name == "peer" else system.name,
        "alone p50 ms": ms(alone, 0.5), "alone p95 ms": ms(alone, 0.95), "alone p99 ms": ms(alone, 0.99),
        "beside p50 ms": ms(beside.interactive, 0.5), "beside p95 ms": ms(beside.interactive, 0.95),
        "beside p99 ms": ms(beside.interactive, 0.99),
        f"bulk {wl.unit}/s alone": rate(bulk_alone), f"bulk {wl.unit}/s beside": rate(beside.bulk),
        "interactive requests alone / beside": f"{len(alone.latencies)} / {len(beside.interactive.latencies)}",
        "bulk requests alone / beside": f"{len(bulk_alone.latencies)} / {len(beside.bulk.latencies)}",
        **passes,
        "errors": alone.errors + bulk_alone.errors + beside.interactive.errors + beside.bulk.errors,
    }


def ratio(value: float, base: float) -> float:
    return value / base if base else math.nan  # nan meets no target


def verdicts(rows: list[dict], unit: str) -> dict[str, dict]:
    """Per system, one round's two target ratios: the interactive p95 beside the bulk against its
    allowance (<= 1 meets it), and the bulk's throughput beside against alone (>= 0.9)."""
    full_pass_ms = next(r["mean bulk pass ms"] for r in rows if r["system"] == FAIR) or 0.0
    out = {}
    for r in rows:
        allowance = 3 * r["alone p50 ms"] + full_pass_ms
        out[r["system"]] = {
            "p95 beside / allowance": ratio(r["beside p95 ms"], allowance),
            "bulk beside / alone": ratio(r[f"bulk {unit}/s beside"], r[f"bulk {unit}/s alone"]),
            "allowance": f"{r['beside p95 ms']:.0f} ms against 3 x {r['alone p50 ms']:.0f} + {full_pass_ms:.0f} "
                         f"= {allowance:.0f} ms",
        }
    return out


def bench_kind(kind: str, model_dir: Path, args) -> dict:
    """Every system, ``args.rounds`` times in turn (this machine's speed drifts over minutes): each
    system's row is its median round by interactive p95 beside the bulk, each verdict the median of
    its ratio over the rounds."""
    wl = WORKLOADS[kind]()
    found = systems(kind, model_dir, args)
    by_system: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for system in found:
            with system.start() as ep:
                print(f"  {kind} / interactive beside bulk: {ep.name if system.name == 'peer' else system.name} ...",
                      flush=True)
                row = measure(ep, system, wl, args)
            by_system.setdefault(row["system"], []).append(row)
    per_round = [verdicts([runs[i] for runs in by_system.values()], wl.unit) for i in range(args.rounds)]
    rows = [tables.median_round(runs, "beside p95 ms") for runs in by_system.values()]
    shown = verdicts(rows, wl.unit)  # the allowance spelt out from the rounds the rows show
    judged = {name: {"p95 beside / allowance": statistics.median(v[name]["p95 beside / allowance"] for v in per_round),
                     "bulk beside / alone": statistics.median(v[name]["bulk beside / alone"] for v in per_round),
                     "allowance": shown[name]["allowance"]} for name in by_system}
    return {"kind": kind, "unit": wl.unit, "workload": wl.description, "rows": rows, "verdicts": judged,
            "every round": by_system}
