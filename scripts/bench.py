"""Benchmark the server against its practical limit and its peers, side by side in one run, as ratios.

What it measures and how is in scripts/benchlib/throughput.py; --mixed, --stream and --overload run
instead the workloads of scripts/benchlib/mixed.py, stream.py and overload.py.

    python scripts/bench.py --size small
    python scripts/bench.py --size base --models embedding --peers --out bench.json --plot bench.png
    python scripts/bench.py --model-dir embedding=models/bge-m3 --models embedding
    python scripts/bench.py --mixed --models reranker --peers --rounds 3
    python scripts/bench.py --overload --models embedding
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchlib import mixed, overload, stream, throughput
from benchlib.models import KINDS

from server.compute.tiny_xlmr import XLMR_SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(KINDS))
    parser.add_argument("--size", choices=list(XLMR_SIZES), default="small")
    parser.add_argument("--model-dir", action="append", default=[], metavar="KIND=PATH",
                        help="use a real model directory instead of random weights, e.g. embedding=models/bge-m3")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (text workloads; audio uses 8)")
    parser.add_argument("--items", type=int, default=256, help="texts per embedding workload (others scale)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--lone", type=int, default=20, help="repeats of the lone request")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every system this many times in turn; each reports its median round")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--max-seconds", type=float, default=300, help="bound on each load run")
    parser.add_argument("--sweep-seconds", type=float, default=10,
                        help="about how long each offered-load point lasts (0: no sweep)")
    parser.add_argument("--sweep-fractions", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.25, 0.5, 0.75, 1.0, 1.25], help="offered loads, as fractions of the server's capacity")
    parser.add_argument("--skip", type=lambda v: set(filter(None, v.split(","))), default=set(),
                        help="systems not to run: offline, batching-off (comma-separated)")
    parser.add_argument("--compare-dtype", choices=["float32", "bfloat16"],
                        help="also run the server in this dtype, side by side (server / server, DTYPE)")
    parser.add_argument("--peers", action="store_true",
                        help="also run Infinity and funasr-server (scripts/benchlib/peers.py)")
    parser.add_argument("--compare-fifo", action="store_true",
                        help="also run the server with --batch-scheduling fifo --no-deadline-scheduling, side by side")
    parser.add_argument("--peers-dir", type=Path, default=Path.home() / ".cache/inference-server/peers",
                        help="where the peers' own virtual environments are made")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    parser.add_argument("--plot", type=Path, default=Path("bench.png"), help="latency-vs-load PNG")
    parser.add_argument("--mixed", action="store_true",
                        help="run only the interactive-beside-bulk workload (scripts/benchlib/mixed.py) instead")
    mixed.add_arguments(parser)
    parser.add_argument("--stream", action="store_true",
                        help="run only the streamed long-recording workload (scripts/benchlib/stream.py) instead")
    stream.add_arguments(parser)
    parser.add_argument("--overload", action="store_true",
                        help="run only the overload workload, burst and sustained (scripts/benchlib/overload.py) "
                             "instead")
    overload.add_arguments(parser)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise (funasr sets INFO)
    if args.mixed:
        return mixed.run(args)
    if args.stream:
        return stream.run(args)
    if args.overload:
        return overload.run(args)
    throughput.run(args)


if __name__ == "__main__":
    main()
