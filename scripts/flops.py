"""FLOPs of a forward pass, and this machine's matmul peak. What is counted, and how, is in
scripts/benchlib/flops.py.

    python scripts/flops.py --peak --dtype bfloat16
    python scripts/flops.py --kind embedding --model-dir models/bge-m3 --costs 512,128,64
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchlib import flops


def main() -> None:
    parser = argparse.ArgumentParser(description="FLOPs of a forward pass, and this machine's matmul peak.")
    parser.add_argument("--peak", action="store_true", help="measure the matmul peak")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kind", choices=flops.KINDS)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--costs", type=lambda s: [int(x) for x in s.split(",")], default=[])
    flops.report(parser.parse_args())


if __name__ == "__main__":
    main()
