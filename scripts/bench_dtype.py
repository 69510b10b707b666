"""float32 against bfloat16 on CPU, model by model, through the server's own adapters: speed and fidelity.

What it measures and how is in scripts/benchlib/dtype_compare.py.

    python scripts/bench_dtype.py --size base --out bench_dtype_base.json
    python scripts/bench_dtype.py --size full --max-seconds 180
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

if "--passive" in sys.argv:  # before torch loads its OpenMP runtime
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# Only now: these import torch, which reads OMP_WAIT_POLICY once, as it loads.
from benchlib import dtype_compare

from server.compute.tiny_xlmr import XLMR_SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="embedding,reranker,asr")
    parser.add_argument("--size", choices=list(XLMR_SIZES), default="base")
    parser.add_argument("--model-dir", action="append", default=[], metavar="KIND=PATH",
                        help="a real model directory instead of random weights, e.g. embedding=models/bge-m3")
    parser.add_argument("--items", type=int, help="texts / pairs / clips per model (default by size)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds at most (after one warm-up round)")
    parser.add_argument("--max-seconds", type=float, default=240,
                        help="per model: no new round starts past this (at least one timed round runs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--attribution", action="store_true",
                        help="also run bfloat16-eager (no cpu_bf16 layers) and float32-packed (cpu_bf16 layers in float32)")
    parser.add_argument("--profile", action="store_true", help="print the top ops of each dtype")
    parser.add_argument("--passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, so CPU "
                             "time counts work only (for a CPU shared with other jobs; serving spins by default)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench_dtype_models",
                        help="where random-weight models are built (reused across runs)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    dtype_compare.run(args)


if __name__ == "__main__":
    main()
