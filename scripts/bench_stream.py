"""Streamed transcription of a long recording: how soon the first text arrives against the whole
answer, and what word timestamps yield and cost. What it measures and how is in
scripts/benchlib/stream.py (also run as ``scripts/bench.py --stream``).

    python scripts/bench_stream.py --size small
    python scripts/bench_stream.py --model-dir asr=models/SenseVoiceSmall --stream-minutes 10 --out stream.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchlib import stream

from server.asr.tiny import SENSEVOICE_SIZES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SENSEVOICE_SIZES), default="small", help="random-weight model size")
    parser.add_argument("--model-dir", action="append", default=[], metavar="asr=PATH",
                        help="a real model directory instead of random weights")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    stream.add_arguments(parser)
    return parser.parse_args()


if __name__ == "__main__":
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise (funasr sets INFO)
    stream.run(parse_args())
