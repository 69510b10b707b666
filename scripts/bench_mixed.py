"""Interactive beside bulk, the workload of ``scripts/bench.py --mixed``: does a small request still
answer quickly while a huge one is being computed, and what does that cost the huge one?

Per model, one client sends bulk requests back to back (embeddings: 1,024 texts; rerank: one query
with 1,000 documents; transcription: a 10-minute recording) while a few others send interactive
requests one at a time, each after a short think time (one text; 20 documents; a 5 s clip). Every
system is measured in three phases of about --mixed-seconds: the interactive clients alone, the
bulk client alone, then both at once (the interactive clients for as long as the bulk runs), so the
interactive p50/p95/p99 alone and beside the bulk, and the bulk's throughput alone and beside the
interactive traffic, come from one run, side by side.

Systems: this server with fair scheduling and no priority field on any request; the same with
"priority": "interactive" on the interactive requests and "background" on the bulk; the server
with --batch-scheduling fifo (oldest first: priorities ignored); with --peers, the peer (Infinity,
funasr-server; they have no priorities) if installed. A missing peer is skipped, never installed
from here.

Targets: the interactive p95 beside the bulk <= 3 x its p50 alone + one full forward pass (an
interactive request that arrives just after a full pass started has to wait for it), and the bulk's
throughput beside the interactive traffic >= 0.9 x alone. One full forward pass is timed, not taken
from a histogram bucket (whose bounds are 2-2.5x apart): the mean of the passes the bulk ran alone
on the fair server, from its /metrics (inference_batch_seconds sum / count over that phase); all
but each request's last carry a full batch budget. The histogram's bound on the longest of them is
printed beside it. Peers are judged against the same pass.

    python scripts/bench.py --mixed --models embedding
    python scripts/bench.py --mixed --models embedding,reranker,asr --peers --rounds 3 --out mixed.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import torch
from benchlib import inputs, load, models, tables
from benchlib.endpoint import Endpoint, Request
from benchlib.inputs import SAMPLE_RATE, text
from benchlib.load import Run
from benchlib.our_server import our_server

FAIR, PRIORITIES, FIFO = "server (fair)", "server (fair, priorities)", "server (fifo)"
BULK_BODIES = 2  # distinct bulk requests, taken in turn
INTERACTIVE_BODIES = 16  # distinct interactive requests, each client taking them in turn from its own offset
MAX_BULK_SENDS = 1000
P95_GOAL, BULK_GOAL = 1.0, 0.9


# ---- workloads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixedWorkload:
    kind: str
    unit: str  # what the bulk requests' `units` count
    bulk: list[Request]
    interactive: list[Request]
    # Smaller requests of both shapes, sent before anything is timed: the first passes of each
    # shape build their kernels.
    warm: list[Request]
    description: str


def embedding_mixed() -> MixedWorkload:
    rng = random.Random(20)
    texts = lambda n, lo, hi: [text(rng, rng.randint(lo, hi)) for _ in range(n)]  # noqa: E731
    body = lambda given: {"model": "bge-m3", "input": given}  # noqa: E731
    bulk = [Request(body(texts(1024, 16, 128)), units=1024) for _ in range(BULK_BODIES)]
    interactive = [Request(body(t)) for t in texts(INTERACTIVE_BODIES, 4, 32)]
    warm = [Request(body(bulk[0].json["input"][:256]), units=256), *interactive[:4]]
    return MixedWorkload("embedding", "texts", bulk, interactive, warm,
                         "bulk: 1,024 texts of 16-128 words a request; interactive: one text of 4-32 words")


def reranker_mixed() -> MixedWorkload:
    rng = random.Random(21)

    def ranking(documents: int) -> Request:
        return inputs.ranking(rng, documents)

    return MixedWorkload("reranker", "documents", [ranking(1000) for _ in range(BULK_BODIES)],
                         [ranking(20) for _ in range(INTERACTIVE_BODIES)], [ranking(250), ranking(20)],
                         "bulk: one query with 1,000 documents of 5-60 words; interactive: 20 documents")


def asr_mixed() -> MixedWorkload:
    def recording(seconds: float, seed: int) -> Request:
        audio = inputs.speech_clip(seconds, seed)
        return Request({"model": "SenseVoiceSmall"}, inputs.wav_bytes(audio), len(audio) / SAMPLE_RATE)

    interactive = [recording(5.0, 400 + i) for i in range(INTERACTIVE_BODIES)]
    return MixedWorkload("asr", "audio s", [recording(600.0, 300 + i) for i in range(BULK_BODIES)], interactive,
                         [recording(150.0, 299), *interactive[:4]],
                         "bulk: a 10-minute recording; interactive: a 5 s clip")


WORKLOADS = {"embedding": embedding_mixed, "reranker": reranker_mixed, "asr": asr_mixed}


def with_priority(requests: list[Request], priority: str) -> list[Request]:
    # JSON body for embeddings and rerank, multipart form fields for transcription: the same dict.
    return [replace(r, json={**r.json, "priority": priority}) for r in requests]


# ---- systems --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    name: str
    start: Callable[[], AbstractContextManager[Endpoint]]
    priorities: bool = False  # interactive requests sent as "interactive", the bulk as "background"


def systems(kind: str, model_dir: Path, args) -> list[System]:
    def ours(name: str, scheduling: str) -> Callable[[], AbstractContextManager[Endpoint]]:
        # Named explicitly: the server would otherwise take INFERENCE_BATCH_SCHEDULING from this environment.
        return lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.dtype, name=name,
                                        extra=("--batch-scheduling", scheduling))

    found = [System(FAIR, ours(FAIR, "fair")), System(PRIORITIES, ours(PRIORITIES, "fair"), priorities=True),
             System(FIFO, ours(FIFO, "fifo"))]
    if args.peers:
        from benchlib import peers

        missing = peers.unavailable(kind, args.peers_dir)
        if missing:
            print(f"  {kind}: peer skipped: {missing}", flush=True)
        else:
            found.append(System("peer", peers.peer_for(kind, model_dir, args.peers_dir)))
    return found


# ---- load -----------------------------------------------------------------------------------------


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


# ---- forward passes, from the server's /metrics -----------------------------------------------------


def pass_histogram(url: str) -> dict[float, float]:
    """inference_batch_seconds' cumulative bucket counts by bound, over the server's models."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "inference_batch_seconds_bucket":
                bound = float(s.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + s.value
    return counts


def longest_pass_bound(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The smallest bucket bound that holds every pass run between two scrapes (inf: past the last)."""
    delta = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    total = delta.get(math.inf, 0.0)
    return min((b for b, count in delta.items() if count >= total), default=None) if total else None


class PassMeter:
    """The forward passes a server ran between ``start`` and ``stop``; a peer has no /metrics: none."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep, self.ours = ep, ep.counters is not None

    def start(self) -> None:
        if self.ours:
            self.counters, self.buckets = self.ep.counters(), pass_histogram(self.ep.base_url)

    def stop(self) -> dict:
        if not self.ours:
            return {"bulk passes": None, "mean bulk pass ms": None, "longest pass <= ms": None}
        after = self.ep.counters()
        passes = after["batches"] - self.counters["batches"]
        seconds = after["batch_seconds"] - self.counters["batch_seconds"]
        longest = longest_pass_bound(self.buckets, pass_histogram(self.ep.base_url))
        return {"bulk passes": int(passes), "mean bulk pass ms": 1000 * seconds / passes if passes else None,
                "longest pass <= ms": None if longest is None else 1000 * longest}


# ---- measuring ------------------------------------------------------------------------------------


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


# ---- report ---------------------------------------------------------------------------------------


def targets(results: list[dict]) -> list[dict]:
    out = []
    for res in results:
        for system, v in res["verdicts"].items():
            out.append({"target": f"{res['kind']}: interactive p95 beside bulk / (3 x p50 alone + full pass)",
                        "system": system, "measured": v["p95 beside / allowance"], "goal": f"<= {P95_GOAL:g}",
                        "met": v["p95 beside / allowance"] <= P95_GOAL, "median round": v["allowance"]})
            out.append({"target": f"{res['kind']}: bulk {res['unit']}/s beside interactive / alone",
                        "system": system, "measured": v["bulk beside / alone"], "goal": f">= {BULK_GOAL:g}",
                        "met": v["bulk beside / alone"] >= BULK_GOAL})
    return out


def pass_note(res: dict) -> str:
    fair = next(r for r in res["rows"] if r["system"] == FAIR)
    if fair["mean bulk pass ms"] is None or fair["longest pass <= ms"] is None:
        return "One full forward pass: none measured (the fair server ran no pass while the bulk ran alone)."
    return (f"One full forward pass (the p95 target's allowance, for every system): {fair['mean bulk pass ms']:.0f} ms, "
            f"timed: the mean of the {fair['bulk passes']} passes the bulk ran alone on {FAIR} "
            f"(inference_batch_seconds sum / count from its /metrics over that phase); its histogram puts the "
            f"longest at <= {fair['longest pass <= ms']:.0f} ms.")


def print_kind(res: dict, args) -> None:
    print(f"\n## {res['kind']}: interactive beside bulk ({res['size']}, 1 bulk client + {args.mixed_clients} "
          f"interactive clients, {args.mixed_think_ms:g} ms think time, ~{args.mixed_seconds:g} s a phase, "
          f"{torch.get_num_threads()} CPU threads)\n")
    print(f"{res['workload']}. p50-p99: the interactive requests' latency alone, then beside the bulk.\n")
    print(tables.markdown(res["rows"]))
    print("\n" + pass_note(res), flush=True)


def save(results: list[dict], args) -> None:
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "mixed": results, "targets": targets(results)}, indent=2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mixed-seconds", type=float, default=25,
                        help="--mixed: about how long each phase lasts (interactive alone, bulk alone, both)")
    parser.add_argument("--mixed-clients", type=int, default=3, help="--mixed: interactive clients")
    parser.add_argument("--mixed-think-ms", type=float, default=50,
                        help="--mixed: an interactive client's mean pause between an answer and its next request")


def main(args) -> None:
    results = models.each_kind(args, bench_kind, print_kind, save)
    print("\n## Targets (interactive beside bulk)\n\n" + tables.markdown(targets(results)))
