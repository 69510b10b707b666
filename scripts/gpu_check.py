"""One-shot check of the server on a CUDA GPU, in float16: fidelity, speed, out-of-memory, memory.

Run by scripts/gpu_check.sh on a GPU host (or by hand), from the repository root; where the project
is not installed, with the repository root on PYTHONPATH (gpu_check.sh puts it there):

    python scripts/gpu_check.py OUT_DIR [--size full|tiny] [--device cuda|cpu]

What each step measures, and how, is in scripts/benchlib/gpu_check.py.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from benchlib import gpu_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=["tiny", "small", "base", "full"], default="full")
    parser.add_argument("--device", default="cuda", help="cuda (float16) or cpu (bfloat16: a dry run)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-check-models",
                        help="where the random-weight models are built (reused by a second run)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--lone", type=int, default=20, help="repeats of the lone request")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="bound on each closed-loop load run")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="the whole run; the steps' budgets scale with it and a step past it is skipped")
    parser.add_argument("--steps", default="environment,build,fidelity,throughput,memory,oom,server")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    gpu_check.run(args)


if __name__ == "__main__":
    main()
