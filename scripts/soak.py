"""Soak test: N minutes of mixed concurrent load on all three endpoints, then a verdict.

What it runs and how it judges is in scripts/benchlib/soak.py.

    python scripts/soak.py --minutes 2
    python scripts/soak.py --minutes 10 --size small --concurrency 16 --json soak.json
    python scripts/soak.py --url http://127.0.0.1:8000 --pid 12345 --api-key sk-local
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchlib import soak
from benchlib.soak import MAX_MINUTES
from benchlib.soak_load import ENDPOINTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help=f"how long to load (max {MAX_MINUTES})")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before memory is taken as warm (default: 20%% of the run, at most 60)")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds of readings whose median is the memory after the warm-up, and at the end")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (1-256)")
    parser.add_argument("--size", choices=["tiny", "small", "base"], default="tiny",
                        help="model size of the server it starts")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server on a thread of this process, not in a subprocess (memory is then "
                             "server + clients)")
    parser.add_argument("--url", help="drive this server instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, to watch its memory")
    parser.add_argument("--api-key", help="Bearer key to send")
    parser.add_argument("--models-dir", type=Path, help="where to build the tiny models (default: a temp dir)")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed memory growth after warm-up")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(ENDPOINTS) + " (default: all)")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="diagnostic, in-process only: call glibc malloc_trim(0) before each memory reading, so "
                             "the readings (and the verdict) show live memory rather than freed memory glibc keeps")
    parser.add_argument("--sample-every", type=float, default=1.0, help="seconds between memory readings")
    parser.add_argument("--ready-timeout", type=float, default=300,
                        help="seconds to wait for the server it starts to load its models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be in [1, 256]")
    mix = dict(ENDPOINTS)
    if args.only:
        chosen = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = set(chosen) - set(ENDPOINTS)
        if unknown or not chosen:
            parser.error(f"--only takes {', '.join(ENDPOINTS)}; got {args.only!r}")
        mix = {name: weight for name, weight in ENDPOINTS.items() if name in chosen}
    if args.url and args.in_process:
        parser.error("--url and --in-process exclude each other")
    if not 0.1 <= args.sample_every <= 60:
        parser.error("--sample-every must be in [0.1, 60]")
    if args.window <= 0:
        parser.error("--window must be positive")
    if args.malloc_trim and not args.in_process:
        parser.error("--malloc-trim works only with --in-process")
    return soak.run(args, mix)


if __name__ == "__main__":
    sys.exit(main())
