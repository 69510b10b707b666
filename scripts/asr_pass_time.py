"""How long one SenseVoice forward pass takes as it fills the audio budget: the figure behind the
choice of bounding passes by cost (``--asr-max-batch-seconds``) rather than by time.

What it measures, and how, is in scripts/benchlib/asr_pass_time.py.

    python scripts/asr_pass_time.py --size full
"""

from __future__ import annotations

import argparse

from benchlib import asr_pass_time

from server.asr.tiny import SENSEVOICE_SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SENSEVOICE_SIZES), default="full")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asr_pass_time.run(args)


if __name__ == "__main__":
    main()
