"""Measuring overload (benchlib/overload.py): the systems, one system's phases and figures, and each
target judged per round and over the rounds."""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from benchlib import load
from benchlib.endpoint import Endpoint, System
from benchlib.metrics import deadline_metrics, metrics_delta
from benchlib.our_server import our_server
from benchlib.overload_client import pct, summary
from benchlib.overload_phases import burst, capacity, drain, lone, sustained, warm
from benchlib.overload_workloads import WORKLOADS, OverloadWorkload
from benchlib.repo import ROOT

SERVER, FIFO, NO_DEADLINES = "server", "server (fifo)", "server (fair, no deadlines)"
DEFAULT_TIMEOUT_S = {"embedding": 8.0, "reranker": 8.0, "asr": 10.0}
BURST_FACTOR, SUSTAINED_LOAD = 3.0, 1.5  # burst: x T x C requests at once; sustained: x C per second
CLIENT_MARGIN_S = 1.0  # no answer by T + this: late (the client gives up)
GOODPUT_GOAL, REFUSAL_MS_GOAL, LATE_GOAL = 0.9, 100.0, 0.05


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

        start = peers.installed_peer(kind, model_dir, args.peers_dir)
        if start is not None:
            found.append(System("peer", start))
    return found


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
