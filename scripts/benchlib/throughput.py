"""Benchmark the server against its practical limit and its peers, side by side in one run, as ratios.

For each model it builds a model directory of a named size (random weights: compute does not depend
on their values) or takes a real one, then measures on fixed, seeded workloads:

* offline: the reference library over the whole workload in one call (BGEM3FlagModel.encode,
  FlagReranker.compute_score, funasr AutoModel.generate batched): the practical limit of this stack;
* server: this server, started as its own process on 127.0.0.1 (``inference-server serve``), driven
  by N concurrent closed-loop clients, each sending one request at a time;
* batching off: the same server with --max-batch-size 1;
* peers, on the same model directory (``--peers``, see scripts/benchlib/peers.py): Infinity for
  embeddings and rerank, funasr's own funasr-server for transcription;
* lone: one request at a time of one typical input, repeated: its p50 latency against the bare
  forward passes it needed (read from the server's own /metrics; for audio, the adapter on that
  clip timed in this process, front end included, which the server runs before the queue), i.e.
  the overhead the server adds;
* latency against offered load: open-loop (Poisson) arrivals at fractions of the server's capacity,
  per system, plotted to a PNG;
* with ``--mixed``, instead of all the above: interactive requests beside a bulk client, fair
  scheduling against fifo and the peers (scripts/benchlib/mixed.py);
* with ``--overload``, instead of all the above: a burst and a sustained load past capacity, with
  request deadlines: goodput, refusals, late answers (scripts/benchlib/overload.py).

    python scripts/bench.py --size small
    python scripts/bench.py --size base --models embedding --peers --out bench.json --plot bench.png
    python scripts/bench.py --model-dir embedding=models/bge-m3 --models embedding
    python scripts/bench.py --mixed --models reranker --peers --rounds 3
    python scripts/bench.py --overload --models embedding

Prints Markdown tables and the targets with their verdicts; --out writes everything as JSON. Every
loop is bounded in count and time; only loopback is used.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path

import torch

from benchlib.endpoint import Endpoint
from benchlib.load import closed_loop, open_loop
from benchlib.models import build
from benchlib.tables import markdown, median_round
from benchlib.throughput_report import save, targets
from benchlib.throughput_systems import OFFLINE, SERVER, systems
from benchlib.throughput_workloads import WORKLOADS, Workload
from benchlib.workload_flops import measure_peaks, with_flops, workload_flops


def measure(ep: Endpoint, wl: Workload, args, bare_s: float | None = None) -> dict:
    """Closed-loop throughput with the workload's clients, then (if it has one) the lone-request
    latency, against ``bare_s`` when the workload measured its bare forward pass, else the server's
    own passes."""
    # Warm the HTTP path and the model at the run's concurrency: the first passes at each batch
    # shape build their kernels, which a short run (10 s clips: 4 rounds of 8) would otherwise count.
    warm = wl.requests[: max(2, min(wl.clients, len(wl.requests) // 4))]
    asyncio.run(closed_loop(ep, warm, len(warm), 120))
    before = ep.counters() if ep.counters else None
    run = asyncio.run(closed_loop(ep, wl.requests, wl.clients, args.max_seconds))
    row = {"system": ep.name, f"{wl.unit}/s": run.units / run.seconds, "requests/s": len(run.latencies) / run.seconds,
           "p50 ms": run.percentile(0.5), "p95 ms": run.percentile(0.95), "p99 ms": run.percentile(0.99),
           "mean batch": None, "padding efficiency": None, "errors": run.errors,
           "client CPU share": run.client_share}
    if before is not None:
        delta = {k: v - before[k] for k, v in ep.counters().items()}
        row["mean batch"] = delta["computed"] / max(1, delta["batches"])
        row["padding efficiency"] = delta["real"] / max(1, delta["padded"])
    if wl.lone is None:
        return row

    before = ep.counters() if ep.counters else None
    lone = asyncio.run(closed_loop(ep, [wl.lone] * args.lone, 1, args.max_seconds))
    row["lone p50 ms"] = lone.percentile(0.5)
    if bare_s is not None:
        row["lone forward ms"] = 1000 * bare_s
    elif before is not None and lone.latencies:
        # The forward passes of a lone request are its batches: their seconds are the bare compute.
        forward_s = (ep.counters()["batch_seconds"] - before["batch_seconds"]) / len(lone.latencies)
        row["lone forward ms"] = 1000 * forward_s
    return row


def sweep(ep: Endpoint, wl: Workload, args, rates: list[float]) -> list[dict]:
    """Latency at each offered load, from a prefix of the workload lasting about --sweep-seconds."""
    points = []
    for rate in rates:
        count = max(8, min(len(wl.requests), round(rate * args.sweep_seconds)))
        run = asyncio.run(open_loop(ep, wl.requests[:count], rate, args.max_seconds))
        points.append({"offered requests/s": rate, "served requests/s": len(run.latencies) / run.seconds,
                       "p50 ms": run.percentile(0.5), "p95 ms": run.percentile(0.95), "errors": run.errors})
    return points


def bench_workload(wl: Workload, model_dir: Path, args) -> dict:
    """Every system on the workload, ``args.rounds`` times in turn (offline reference, ours, batching
    off, peers; then again): this machine's speed drifts by up to a quarter over minutes, so a
    system measured minutes after another can win or lose on the drift alone. Each system's row is
    its median round, each ratio the median of that ratio within each round; the latency sweep runs
    in the first round only."""
    by_system: dict[str, list[dict]] = {}
    sweeps, rates = {}, None
    bare_s = wl.bare(model_dir) if wl.bare is not None else None  # before any server runs: alone
    work = workload_flops(wl, model_dir) if wl.costs is not None else None
    peaks = getattr(args, "matmul_peaks", None)
    for _ in range(args.rounds):
        if wl.offline is not None and "offline" not in getattr(args, "skip", ()):
            seconds = wl.offline(model_dir)
            by_system.setdefault(OFFLINE, []).append(with_flops(
                {"system": OFFLINE, f"{wl.unit}/s": sum(r.units for r in wl.requests) / seconds}, wl, work, peaks))
        for start in systems(wl, model_dir, args):
            with start() as ep:
                print(f"  {wl.kind} / {wl.name}: {ep.name} ...", flush=True)
                row = with_flops(measure(ep, wl, args, bare_s), wl, work, peaks)
                if rates is None and args.sweep_seconds > 0:  # ours goes first: its capacity sets the scale
                    rates = [f * row["requests/s"] for f in args.sweep_fractions]
                if ep.name not in sweeps:
                    sweeps[ep.name] = sweep(ep, wl, args, rates or [])
            by_system.setdefault(ep.name, []).append(row)
    rows = [median_round(runs, f"{wl.unit}/s") for runs in by_system.values()]
    # Ratios within each round (systems measured side by side), then their median over the rounds.
    per_round = [ratios([runs[i] for runs in by_system.values()], wl.unit) for i in range(args.rounds)]
    res = {"kind": wl.kind, "workload": wl.name, "unit": wl.unit, "clients": wl.clients, "rows": rows,
           "sweep": sweeps, "ratios": {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}}
    if work is not None:
        res["work"] = work
    return res


def ratios(rows: list[dict], unit: str) -> dict[str, float]:
    """Ours against each other system ("server / X": above 1 means ours is faster), and the lone
    request's latency against its forward passes."""
    speed = {r["system"]: r[f"{unit}/s"] for r in rows}
    out = {f"server / {name}": speed[SERVER] / value for name, value in speed.items() if name != SERVER}
    server = next(r for r in rows if r["system"] == SERVER)
    if server.get("lone forward ms"):
        out["lone p50 / its forward pass"] = server["lone p50 ms"] / server["lone forward ms"]
    return out


def run(args) -> None:
    """The throughput benchmark, model by model and workload by workload, each printed and saved as
    soon as it is measured."""
    given = dict(item.split("=", 1) for item in args.model_dir)
    args.matmul_peaks = measure_peaks(args)
    for who, p in (("server", args.matmul_peaks["server"]), ("offline reference", args.matmul_peaks["offline"])):
        threads = f", {p['threads']} threads" if p["threads"] else ""
        print(f"matmul peak for the {who}: {p['FLOP/s'] / 1e9:.1f} GFLOP/s ({p['dtype']} on {p['device']}{threads})")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            model_dir = Path(given[kind]) if kind in given else build(kind, args.size, Path(tmp))
            for wl in WORKLOADS[kind](args):
                res = bench_workload(wl, model_dir, args)
                res["size"] = "given" if kind in given else args.size
                results.append(res)
                print(f"\n## {kind}: {wl.name} ({res['size']}, {wl.clients} clients, "
                      f"{torch.get_num_threads()} CPU threads)\n")
                print(markdown(res["rows"]))
                print("\n" + ", ".join(f"{k}: {v:.2f}x" for k, v in res["ratios"].items()), flush=True)
                save(results, args)  # after every workload: a long run cut short keeps what it measured
    print("\n## Targets\n\n" + markdown(targets(results)))
    print(f"\nplot: {args.plot}")
