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

from benchlib import models, tables
from benchlib.mixed_measure import bench_kind
from benchlib.mixed_report import print_kind, save, targets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mixed-seconds", type=float, default=25,
                        help="--mixed: about how long each phase lasts (interactive alone, bulk alone, both)")
    parser.add_argument("--mixed-clients", type=int, default=3, help="--mixed: interactive clients")
    parser.add_argument("--mixed-think-ms", type=float, default=50,
                        help="--mixed: an interactive client's mean pause between an answer and its next request")


def run(args) -> None:
    """Interactive beside bulk for each of --models, then every target with its verdict."""
    results = models.each_kind(args, bench_kind, print_kind, save)
    print("\n## Targets (interactive beside bulk)\n\n" + tables.markdown(targets(results)))
