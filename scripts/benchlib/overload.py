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
mean pass over its sustained phase, inference_batch_seconds sum / count, as benchlib/mixed.py does; every
system is judged against that pass). With --rounds N each figure is the median over the rounds.

    python scripts/bench.py --overload --models embedding --size small
    python scripts/bench.py --overload --models embedding,reranker,asr --peers --rounds 3 --out overload.json
"""

from __future__ import annotations

import argparse

from benchlib import models, tables
from benchlib.overload_measure import (
    FIFO,
    NO_DEADLINES,
    SERVER,
    bench_kind,
    has_deadline_flag,
)
from benchlib.overload_report import print_kind, save


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


def run(args) -> None:
    """Overload for each of --models, then every target with its verdict."""
    args.deadline_flag = has_deadline_flag()
    if not args.deadline_flag:
        print(f"note: this server's `serve` has no --deadline-scheduling: {FIFO} runs with --batch-scheduling fifo "
              f"alone, and {NO_DEADLINES!r} is skipped (the same as {SERVER!r} here)", flush=True)
    results = models.each_kind(args, bench_kind, print_kind, save)
    print("\n## Targets (overload)\n\n" + tables.markdown([t for r in results for t in r.get("targets", [])]))
