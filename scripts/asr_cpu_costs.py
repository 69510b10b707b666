"""Where a transcription's CPU time goes, piece by piece: the figures behind server/engine/cpu_gate.py and
the sliced CTC head (server/asr/ctc.py's best_path).

What it measures, and how, is in scripts/benchlib/asr_cpu_costs.py.

    python scripts/asr_cpu_costs.py --size small
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchlib import asr_cpu_costs

from server.asr.tiny import SENSEVOICE_SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SENSEVOICE_SIZES), default="small")
    parser.add_argument("--model-dir", type=Path, help="a SenseVoiceSmall directory instead of random weights")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    asr_cpu_costs.run(args)


if __name__ == "__main__":
    main()
