"""Overload, the workload of ``scripts/bench.py --overload``: offered more than it can compute, does a
server refuse at once what it cannot finish in time, and finish in time what it accepts?

Per model kind, every system serves with a request deadline T (``--request-timeout T``;
--overload-timeout, default 8 s for embeddings and rerank, 10 s for transcription) and is driven with
one bulk request shape (embeddings: 38 texts of mixed lengths; rerank: a query with 20-40 documents;
transcription: a 10-20 s clip) and one small interactive shape (one short text; a query with 2-3
documents; a 2-3 s clip; sent with "priority": "interactive"). Per system, in this order:

* warm-up: half the bulk bodies one at a time, then every one at the capacity run's concurrency;
* capacity C: the requests/s the default server completes saturated with the bulk shape (a closed
  loop of 4 clients, 8 for clips, for --overload-capacity-seconds). The default server's, in the
  first round, sizes the load and judges every system of the kind; each system's own is run too (so
  every server has the same history of passes to forecast from) and shown beside it;
* interactive alone: --overload-lone interactive requests, one at a time: their p50 and p95;
* burst: 3 x T x C bulk requests sent at once (at most --overload-max-burst). Each ends good (200
  within T), refused at once (503 "overloaded", from the deadline or a full queue), late (504
  "timeout", 503 "deadline_exceeded", a 200 after T, or no answer by T + 1 s: the client's own
  limit, which is what bounds a peer, as peers have no deadline), or an error (anything else);
* sustained: bulk requests arriving open loop (Poisson, seeded) at 1.5 x C for --overload-seconds,
  beside one interactive client (one request at a time, --overload-think-ms think time, jittered).
  Goodput: 200s within T completed inside the arrival window, per second. Between the burst and
  this phase the system is let finish (our queue empty and its counters still, then one interactive
  request answered: a peer keeps computing what the client gave up on).

The server's own accounting is read from /metrics where it has it, per phase:
inference_requests_refused_total{reason}, inference_request_deadlines_total{outcome} and the
inference_deadline_prediction_error_seconds histogram (how far each accepted request's completion
fell from the forecast at its admission, by direction, early or late: the mean signed error, the
mean absolute error, the bucket the median absolute error falls in, and the share within 0.5 s and
1 s), and the share of its 503 answers that took at most 100 ms inside the server
(inference_request_seconds; the doomed requests' 503s count too): a refusal's latency as the
client measures it includes the client's own turn on a machine it shares with the server; None
where absent. The client sends from pools of 16 connections (one pool of hundreds costs this
process seconds of CPU in httpcore) and reports its own CPU beside the figures.

Systems: "server" (fair scheduling + deadline scheduling, the default), "server (fifo)"
(--batch-scheduling fifo --no-deadline-scheduling), "server (fair, no deadlines)"
(--no-deadline-scheduling); with --peers, the peer (Infinity; funasr-server) if installed. A server
without --deadline-scheduling (probed from `serve --help`) runs fifo without that flag and skips
"fair, no deadlines" (the same as "server" there).

Targets, burst and sustained alike: goodput >= 0.9 x C x T (burst) and >= 0.9 x C per second
(sustained); refusals answered within 100 ms (p95); late requests <= 5% of all sent; sustained, the
interactive p95 beside the bulk <= 3 x its p50 alone + one full forward pass (the default server's
mean pass over its sustained phase, inference_batch_seconds sum / count, as bench_mixed does; every
system is judged against that pass). With --rounds N each figure is the median over the rounds.

    python scripts/bench.py --overload --models embedding --size small
    python scripts/bench.py --overload --models embedding,reranker,asr --peers --rounds 3 --out overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
from benchlib import inputs, load, models, tables
from benchlib.endpoint import Endpoint, Request
from benchlib.inputs import SAMPLE_RATE, text
from benchlib.our_server import our_server
from benchlib.repo import ROOT

SERVER, FIFO, NO_DEADLINES = "server", "server (fifo)", "server (fair, no deadlines)"
DEFAULT_TIMEOUT_S = {"embedding": 8.0, "reranker": 8.0, "asr": 10.0}
BURST_FACTOR, SUSTAINED_LOAD = 3.0, 1.5  # burst: x T x C requests at once; sustained: x C per second
CLIENT_MARGIN_S = 1.0  # no answer by T + this: late (the client gives up)
BODIES = 16  # distinct requests of each shape, taken in turn
POOL = 16  # connections per httpx client
GOODPUT_GOAL, REFUSAL_MS_GOAL, LATE_GOAL = 0.9, 100.0, 0.05
LATE = ("504 timeout", "503 deadline_exceeded", "200 after T", "client timeout")


# ---- workloads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverloadWorkload:
    kind: str
    bulk: list[Request]
    interactive: list[Request]  # with "priority": "interactive"
    capacity_clients: int
    description: str


def interactive(requests: list[Request]) -> list[Request]:
    # A JSON body for embeddings and rerank, form fields for transcription: the same dict.
    return [replace(r, json={**r.json, "priority": "interactive"}) for r in requests]


def embedding_overload() -> OverloadWorkload:
    rng = random.Random(30)

    def words() -> int:  # half short, 40% mid-length, 10% long
        return rng.choice([rng.randint(4, 32)] * 5 + [rng.randint(32, 128)] * 4 + [rng.randint(128, 400)])

    bulk = [Request({"model": "bge-m3", "input": [text(rng, words()) for _ in range(38)]}, units=38)
            for _ in range(BODIES)]
    quick = [Request({"model": "bge-m3", "input": text(rng, rng.randint(4, 16))}) for _ in range(BODIES)]
    return OverloadWorkload("embedding", bulk, interactive(quick), 4,
                            "bulk: 38 texts a request (half 4-32 words, 40% 32-128, 10% 128-400); interactive: one "
                            "text of 4-16 words")


def reranker_overload() -> OverloadWorkload:
    rng = random.Random(31)

    def ranking(documents: int) -> Request:
        return inputs.ranking(rng, documents)

    return OverloadWorkload("reranker", [ranking(rng.randint(20, 40)) for _ in range(BODIES)],
                            interactive([ranking(rng.randint(2, 3)) for _ in range(BODIES)]), 4,
                            "bulk: a query with 20-40 documents of 5-60 words; interactive: 2-3 documents")


def asr_overload() -> OverloadWorkload:
    rng = random.Random(32)

    def clip(seconds: float, seed: int) -> Request:
        audio = inputs.speech_clip(seconds, seed)
        return Request({"model": "SenseVoiceSmall"}, inputs.wav_bytes(audio), len(audio) / SAMPLE_RATE)

    return OverloadWorkload("asr", [clip(rng.uniform(10, 20), 500 + i) for i in range(BODIES)],
                            interactive([clip(rng.uniform(2, 3), 600 + i) for i in range(BODIES)]), 8,
                            "bulk: a 10-20 s clip; interactive: a 2-3 s clip")


WORKLOADS = {"embedding": embedding_overload, "reranker": reranker_overload, "asr": asr_overload}


# ---- systems --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    name: str
    start: Callable[[], AbstractContextManager[Endpoint]]


def has_deadline_flag() -> bool:
    """Whether this checkout's `serve` takes --deadline-scheduling / --no-deadline-scheduling."""
    try:
        done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--help"], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--no-deadline-scheduling" in done.stdout


def systems(kind: str, model_dir: Path, timeout_s: float, args) -> list[System]:
    def ours(name: str, *flags: str) -> Callable[[], AbstractContextManager[Endpoint]]:
        # Every setting named: the server would otherwise take INFERENCE_* from this environment.
        return lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.dtype, name=name,
                                  extra=("--request-timeout", f"{timeout_s:g}", *flags))

    if args.deadline_flag:
        found = [System(SERVER, ours(SERVER, "--batch-scheduling", "fair", "--deadline-scheduling")),
                 System(FIFO, ours(FIFO, "--batch-scheduling", "fifo", "--no-deadline-scheduling")),
                 System(NO_DEADLINES, ours(NO_DEADLINES, "--batch-scheduling", "fair", "--no-deadline-scheduling"))]
    else:
        found = [System(SERVER, ours(SERVER, "--batch-scheduling", "fair")),
                 System(FIFO, ours(FIFO, "--batch-scheduling", "fifo"))]
    if args.peers:
        from benchlib import peers

        missing = peers.unavailable(kind, args.peers_dir)
        if missing:
            print(f"  {kind}: peer skipped: {missing}", flush=True)
        else:
            found.append(System("peer", peers.peer_for(kind, model_dir, args.peers_dir)))
    return found


# ---- one request, and what became of it ---------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    sent_s: float  # when it was sent, from the phase's start
    seconds: float  # until its answer (or the client gave up)
    status: int | None
    code: str | None  # the error body's code; "client timeout", or the exception's name, where no answer
    retry_after: str | None

    def verdict(self, timeout_s: float) -> str:
        if self.status == 200:
            return "good" if self.seconds <= timeout_s else "200 after T"
        if self.status == 503 and self.code == "overloaded":
            return "refused"
        if self.status == 503 and self.code == "deadline_exceeded":
            return "503 deadline_exceeded"
        if self.status == 504:
            return "504 timeout"
        return "client timeout" if self.code == "client timeout" else "error"


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except Exception:  # a peer's body, HTML, plain text: never crash on it
        return None


async def send(ep: Endpoint, http: httpx.AsyncClient, req: Request, limit_s: float, t0: float) -> Outcome:
    started = time.perf_counter()
    status = code = retry_after = None
    try:
        response = await asyncio.wait_for(ep.send(http, req), limit_s)
        status, retry_after = response.status_code, response.headers.get("retry-after")
        code = None if status == 200 else error_code(response)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        code = "client timeout"
    except httpx.HTTPError as e:
        code = type(e).__name__
    return Outcome(started - t0, time.perf_counter() - started, status, code, retry_after)


def client(ep: Endpoint, connections: int, limit_s: float) -> httpx.AsyncClient:
    connections = max(1, connections)
    # verify=False: plain HTTP on loopback, and loading the CA store costs ~25 ms of CPU a client.
    return httpx.AsyncClient(base_url=ep.base_url, timeout=limit_s + 5, verify=False,
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


@asynccontextmanager
async def clients(ep: Endpoint, connections: int, limit_s: float) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``connections`` in pools of POOL: httpcore's pool does work quadratic in its connections (a
    burst of 500 on one pool took ~9 s of this process's CPU, which the server then lacked)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(ep, POOL, limit_s))
               for _ in range(max(1, math.ceil(connections / POOL)))]


def pct(values: list[float], q: float) -> float | None:
    return 1000 * sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else None


def summary(outcomes: list[Outcome], timeout_s: float) -> dict:
    """Counts by verdict, the refusals' latency, and every (status, code) seen."""
    verdicts = collections.Counter(o.verdict(timeout_s) for o in outcomes)
    refused = [o for o in outcomes if o.verdict(timeout_s) == "refused"]
    late = sum(verdicts[v] for v in LATE)
    retry = [float(o.retry_after) for o in refused if (o.retry_after or "").strip().isdigit()]
    return {"requests": len(outcomes), "good": verdicts["good"], "refused": len(refused),
            "refusal p50 ms": pct([o.seconds for o in refused], 0.5),
            "refusal p95 ms": pct([o.seconds for o in refused], 0.95),
            "refusals without Retry-After": len(refused) - len(retry),
            "Retry-After s (median)": statistics.median(retry) if retry else None,
            "late": " / ".join(str(verdicts[v]) for v in LATE),
            "late share": late / len(outcomes) if outcomes else None,
            "errors": verdicts["error"],
            "answers": dict(collections.Counter(f"{o.status} {o.code}" for o in outcomes))}


# ---- the server's own accounting, from /metrics -------------------------------------------------------


def deadline_metrics(url: str) -> dict:
    """Totals of the deadline families (None where the server has no such family), the queue depth,
    and ``activity``: every item counted and request refused so far (it stops moving when the server
    has nothing left to do)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {"refused deadline": None, "refused queue_full": None, "deadlines met": None,
                 "deadlines missed": None, "deadlines missed_dropped_early": None, "error late sum": None,
                 "error early sum": None, "error count": None, "error buckets": None, "queue depth": None,
                 "503 count": None, "503 within 100 ms": None, "activity": 0.0}
    try:
        families = list(text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text))
    except Exception:
        return out
    for family in families:
        if family.name == "inference_requests_refused":
            out["refused deadline"], out["refused queue_full"] = 0.0, 0.0
        elif family.name == "inference_request_deadlines":
            out["deadlines met"], out["deadlines missed"], out["deadlines missed_dropped_early"] = 0.0, 0.0, 0.0
        elif family.name == "inference_deadline_prediction_error_seconds":
            out["error count"], out["error buckets"] = 0.0, {}
            out["error late sum"], out["error early sum"] = 0.0, 0.0
        elif family.name == "inference_queue_depth":
            out["queue depth"] = 0.0
        elif family.name == "inference_request_seconds":
            out["503 count"], out["503 within 100 ms"] = 0.0, 0.0
        for s in family.samples:
            if s.name == "inference_requests_refused_total" and f"refused {s.labels.get('reason')}" in out:
                out[f"refused {s.labels['reason']}"] += s.value
                out["activity"] += s.value
            elif s.name == "inference_request_deadlines_total" and f"deadlines {s.labels.get('outcome')}" in out:
                out[f"deadlines {s.labels['outcome']}"] += s.value
            elif s.name == "inference_deadline_prediction_error_seconds_sum":
                out[f"error {s.labels.get('direction')} sum"] += s.value
            elif s.name == "inference_deadline_prediction_error_seconds_count":
                out["error count"] += s.value
            elif s.name == "inference_deadline_prediction_error_seconds_bucket":  # |error|, both directions
                bound = float(s.labels["le"])
                out["error buckets"][bound] = out["error buckets"].get(bound, 0.0) + s.value
            elif s.name == "inference_queue_depth":
                out["queue depth"] += s.value
            elif s.name == "inference_request_seconds_count" and s.labels.get("status") == "503":
                out["503 count"] += s.value
            elif (s.name == "inference_request_seconds_bucket" and s.labels.get("status") == "503"
                  and float(s.labels["le"]) == 0.1):
                out["503 within 100 ms"] += s.value
            elif s.name == "inference_items_total":
                out["activity"] += s.value
    return out


def metrics_delta(before: dict | None, after: dict | None) -> dict:
    """The server's deadline accounting over a phase: counts; the prediction error's mean (signed:
    late minus early) and mean absolute, the bucket the median absolute error falls in, and the
    share within 0.5 s and 1 s."""
    keys = ("refused deadline", "refused queue_full", "deadlines met", "deadlines missed",
            "deadlines missed_dropped_early")
    out = dict.fromkeys((*keys, "server: 503s within 100 ms", "prediction error mean s", "prediction |error| mean s", "prediction |error| median in",
                         "within 0.5 s", "within 1 s"))
    if before is None or after is None:
        return out
    diff = lambda k: None if after[k] is None else after[k] - (before[k] or 0.0)  # noqa: E731
    out.update({k: diff(k) for k in keys})
    answered_503 = diff("503 count")
    if answered_503:  # the refusals' own time inside the server, without the client's or the network's
        out["server: 503s within 100 ms"] = diff("503 within 100 ms") / answered_503
    count = diff("error count")
    if not count:
        return out
    late, early = diff("error late sum"), diff("error early sum")
    out["prediction error mean s"] = (late - early) / count
    out["prediction |error| mean s"] = (late + early) / count
    cumulative = sorted((b, n - (before["error buckets"] or {}).get(b, 0.0)) for b, n in after["error buckets"].items())
    lower = 0.0
    for bound, n in cumulative:  # the first bucket holding half the observations
        if n >= count / 2:
            out["prediction |error| median in"] = f"({lower:g}, {bound:g}] s"
            break
        lower = bound
    at = dict(cumulative)
    for width in (0.5, 1.0):
        if width in at:
            out[f"within {width:g} s"] = at[width] / count
    return out


# ---- phases ---------------------------------------------------------------------------------------


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


# ---- measuring ------------------------------------------------------------------------------------


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


def measure(ep: Endpoint, wl: OverloadWorkload, cap: float, own_cap: float, timeout_s: float, args) -> dict:
    """One system: interactive alone, the burst, the sustained overload (the server warmed, and its
    own capacity ``own_cap`` measured, before; ``cap``: the default server's, which sizes the load)."""
    limit_s, think_s = timeout_s + CLIENT_MARGIN_S, args.overload_think_ms / 1000
    hard_stop = lambda: time.perf_counter() + args.max_seconds  # noqa: E731
    drain(ep, wl, timeout_s + 30)  # whatever the capacity run's clients gave up on
    alone = asyncio.run(lone(ep, wl.interactive, args.overload_lone, think_s, limit_s, hard_stop()))
    alone_ok = [o.seconds for o in alone if o.status == 200]

    count = max(1, round(BURST_FACTOR * timeout_s * cap))
    if count > args.overload_max_burst:
        print(f"    burst of {count} capped at --overload-max-burst {args.overload_max_burst}", flush=True)
        count = args.overload_max_burst
    scrape = (lambda: deadline_metrics(ep.base_url)) if ep.counters else (lambda: None)  # noqa: E731
    before, cpu = scrape(), load.cpu_seconds()
    burst_out = asyncio.run(burst(ep, wl.bulk, count, limit_s))
    burst_cpu = load.cpu_seconds() - cpu
    drained = drain(ep, wl, BURST_FACTOR * timeout_s + 60)
    if drained is None:
        print(f"    {ep.name}: still busy {BURST_FACTOR * timeout_s + 60:g} s after the burst", flush=True)
    after_burst = scrape()
    b = summary(burst_out, timeout_s)
    burst_row = {"system": ep.name, **{k: b[k] for k in ("requests", "good")},
                 "goodput / (C x T)": b["good"] / (cap * timeout_s), **{k: v for k, v in b.items()
                                                                        if k not in ("requests", "good", "answers")},
                 "client CPU s": burst_cpu, "drained in s": drained, **metrics_delta(before, after_burst)}

    counters = ep.counters() if ep.counters else None
    rate = SUSTAINED_LOAD * cap
    cpu, started = load.cpu_seconds(), time.perf_counter()
    bulk, beside = asyncio.run(sustained(ep, wl, rate, args.overload_seconds, limit_s, think_s, hard_stop()))
    client_cpu = (load.cpu_seconds() - cpu) / ((time.perf_counter() - started) * len(os.sched_getaffinity(0)))
    after = scrape()
    passes = None
    if counters is not None:
        now = ep.counters()
        n = now["batches"] - counters["batches"]
        passes = 1000 * (now["batch_seconds"] - counters["batch_seconds"]) / n if n else None
    s = summary(bulk, timeout_s)
    in_window = sum(1 for o in bulk if o.verdict(timeout_s) == "good"
                    and o.sent_s + o.seconds <= args.overload_seconds)
    beside_ok = [o.seconds for o in beside if o.status == 200]
    sustained_row = {"system": ep.name, "own C requests/s": own_cap, "offered requests/s": rate,
                     "requests": s["requests"],
                     "goodput requests/s": in_window / args.overload_seconds,
                     "goodput / C": in_window / args.overload_seconds / cap,
                     **{k: v for k, v in s.items() if k not in ("requests", "good", "answers")},
                     "interactive alone p50 ms": pct(alone_ok, 0.5), "alone p95 ms": pct(alone_ok, 0.95),
                     "beside p50 ms": pct(beside_ok, 0.5), "beside p95 ms": pct(beside_ok, 0.95),
                     "interactive failed alone / beside":
                         f"{len(alone) - len(alone_ok)} / {len(beside) - len(beside_ok)}",
                     "mean pass ms": passes, "client CPU share": client_cpu, **metrics_delta(after_burst, after)}
    return {"burst": burst_row, "sustained": sustained_row,
            "answers": {"burst": b["answers"], "sustained": s["answers"]}}


def round_targets(rows: dict[str, dict]) -> list[dict]:
    """One round's targets per system; the interactive allowance takes the default server's pass."""
    full_pass = (rows.get(SERVER, {}).get("sustained", {}).get("mean pass ms")) or 0.0
    out = []

    def check(system: str, what: str, value: float | None, goal: float, higher: bool, note: str = "") -> None:
        if value is not None:
            out.append({"target": what, "system": system, "measured": value,
                        "goal": f"{'>=' if higher else '<='} {goal:g}", "higher": higher, "goal value": goal,
                        "note": note})

    for name, r in rows.items():
        b, s = r["burst"], r["sustained"]
        check(name, "burst: goodput / (C x T)", b["goodput / (C x T)"], GOODPUT_GOAL, True)
        check(name, "burst: refusal p95 ms", b["refusal p95 ms"], REFUSAL_MS_GOAL, False)
        check(name, "burst: late share", b["late share"], LATE_GOAL, False)
        check(name, "sustained: goodput / C", s["goodput / C"], GOODPUT_GOAL, True)
        check(name, "sustained: refusal p95 ms", s["refusal p95 ms"], REFUSAL_MS_GOAL, False)
        check(name, "sustained: late share", s["late share"], LATE_GOAL, False)
        if s["interactive alone p50 ms"] is not None:
            allowance = 3 * s["interactive alone p50 ms"] + full_pass
            beside = s["beside p95 ms"] if s["beside p95 ms"] is not None else math.inf
            check(name, "sustained: interactive p95 beside / (3 x p50 alone + full pass)", beside / allowance, 1.0,
                  False, f"{beside:.0f} ms against 3 x {s['interactive alone p50 ms']:.0f} + {full_pass:.0f} ms")
    return out


def bench_kind(kind: str, model_dir: Path, args) -> dict:
    wl = WORKLOADS[kind]()
    timeout_s = args.overload_timeout or DEFAULT_TIMEOUT_S[kind]
    found = systems(kind, model_dir, timeout_s, args)
    cap, by_system, per_round = None, {}, []
    limit_s = timeout_s + CLIENT_MARGIN_S
    for _ in range(args.rounds):
        rows, queue, deferred = {}, list(found), set()
        while queue:
            system = queue.pop(0)
            with system.start() as ep:
                name = ep.name if system.name == "peer" else system.name
                print(f"  {kind} / overload: {name} ...", flush=True)
                warm(ep, wl, limit_s, args)
                # Every system's own (the same history of passes before the burst, for its forecasts);
                # the default server's in the first round is the figure that sizes the load for all.
                own = capacity(ep, wl, limit_s, args)
                if cap is None and not own["requests/s"]:
                    print(f"    {name}: no bulk request answered 200 in its capacity run: {own['answers']}", flush=True)
                    if system.name not in deferred and len(queue) > len(deferred):
                        deferred.add(system.name)  # measured once another system has given C
                        queue.append(system)
                    continue
                if cap is None:
                    cap = {"system": name, **own}
                rows[name] = measure(ep, wl, cap["requests/s"], own["requests/s"], timeout_s, args)
            by_system.setdefault(name, []).append(rows[name])
        if cap is None:
            print(f"  {kind}: no system answered a bulk request in its capacity run: skipped", flush=True)
            return {"kind": kind, "workload": wl.description, "timeout s": timeout_s, "capacity": own, "skipped": True}
        per_round.append(round_targets(rows))
    # Each system's tables show its median round by sustained goodput; each target the median over rounds.
    order = [s.name for s in found]  # the systems' own order, whichever ran first
    by_system = dict(sorted(by_system.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    shown = {name: sorted(runs, key=lambda r: r["sustained"]["goodput / C"])[(len(runs) - 1) // 2]
             for name, runs in by_system.items()}
    judged = []
    for first in (t for rnd in per_round for t in rnd):
        if any((j["target"], j["system"]) == (f"{kind}: {first['target']}", first["system"]) for j in judged):
            continue
        same = [t for rnd in per_round for t in rnd if (t["target"], t["system"]) == (first["target"], first["system"])]
        value = statistics.median(t["measured"] for t in same)
        judged.append({"target": f"{kind}: {first['target']}", "system": first["system"], "measured": value,
                       "goal": first["goal"],
                       "met": value >= first["goal value"] if first["higher"] else value <= first["goal value"],
                       "rounds": " / ".join(f"{t['measured']:.2f}" for t in same) if len(same) > 1 else None,
                       "note": first["note"] or None})
    judged.sort(key=lambda t: list(by_system).index(t["system"]))
    return {"kind": kind, "workload": wl.description, "timeout s": timeout_s, "capacity": cap,
            "burst": [r["burst"] for r in shown.values()], "sustained": [r["sustained"] for r in shown.values()],
            "answers": {name: r["answers"] for name, r in shown.items()}, "targets": judged,
            "every round": by_system}


# ---- report ---------------------------------------------------------------------------------------


SERVER_COLUMNS = ("refused deadline", "refused queue_full", "deadlines met", "deadlines missed",
                  "deadlines missed_dropped_early", "server: 503s within 100 ms", "prediction error mean s", "prediction |error| mean s", "prediction |error| median in",
                  "within 0.5 s", "within 1 s")


def print_kind(res: dict, args) -> None:
    cap = res["capacity"]
    print(f"\n## {res['kind']}: overload ({res['size']}, T = {res['timeout s']:g} s)\n\n{res['workload']}.")
    if res.get("skipped"):
        print(f"Skipped: no system answered a bulk request in its capacity run (the last: {cap['answers']}).")
        return
    print(f"Capacity C = {cap['requests/s']:.2f} requests/s: {cap['clients']} closed-loop clients for "
          f"{cap['seconds']:.1f} s on {cap['system']} in the first round ({cap['requests']} answered 200, p50 "
          f"{cap['p50 ms'] or 0:.0f} ms; all answers: {cap['answers']}); the same C for every system"
          + ("." if cap["system"] == SERVER else f" ({SERVER} answered none in its own capacity run)."))
    own = lambda r: {k: v for k, v in r.items() if k not in SERVER_COLUMNS}  # noqa: E731

    def theirs(phase: str) -> list[dict]:
        return [{"system": r["system"], "phase": phase, **{k: r.get(k) for k in SERVER_COLUMNS}} for r in res[phase]]

    print(f"\n### burst: {BURST_FACTOR:g} x T x C bulk requests at once\n\nlate: "
          f"{' / '.join(LATE)}\n\n" + tables.markdown([own(r) for r in res["burst"]]))
    print(f"\n### sustained: {SUSTAINED_LOAD:g} x C open loop for {args.overload_seconds:g} s, one interactive "
          f"client beside ({args.overload_think_ms:g} ms think time)\n\n"
          + tables.markdown([own(r) for r in res["sustained"]]))
    print("\n### the servers' own deadline accounting (/metrics; None: no such metric)\n\n"
          + tables.markdown(theirs("burst") + theirs("sustained")))
    print("\nEvery answer, as status and error code:\n")
    for name, phases in res["answers"].items():
        print(f"- {name}: " + "; ".join(f"{phase}: {answers}" for phase, answers in phases.items()))
    print(flush=True)


def save(results: list[dict], args) -> None:
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "overload": results,
                                        "targets": [t for r in results for t in r.get("targets", [])]}, indent=2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overload-timeout", type=float, default=None,
                        help="--overload: the request deadline T, serve --request-timeout (default: 8 s; clips 10 s)")
    parser.add_argument("--overload-seconds", type=float, default=60, help="--overload: the sustained phase's length")
    parser.add_argument("--overload-capacity-seconds", type=float, default=10,
                        help="--overload: about how long the capacity closed loop runs")
    parser.add_argument("--overload-lone", type=int, default=20, help="--overload: interactive requests alone")
    parser.add_argument("--overload-think-ms", type=float, default=200,
                        help="--overload: the interactive client's mean pause between an answer and its next request")
    parser.add_argument("--overload-max-burst", type=int, default=1000,
                        help="--overload: at most this many requests in the burst (one connection each)")


def main(args) -> None:
    args.deadline_flag = has_deadline_flag()
    if not args.deadline_flag:
        print(f"note: this server's `serve` has no --deadline-scheduling: {FIFO} runs with --batch-scheduling fifo "
              f"alone, and {NO_DEADLINES!r} is skipped (the same as {SERVER!r} here)", flush=True)
    results = models.each_kind(args, bench_kind, print_kind, save)
    print("\n## Targets (overload)\n\n" + tables.markdown([t for r in results for t in r.get("targets", [])]))
