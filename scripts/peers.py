"""Start each peer server (Infinity, funasr-server) on random-weight models and check its answers
against this server's; builds Infinity's virtual environment first if it has none. The peers
themselves are in scripts/benchlib/peers.py.

    python scripts/peers.py --size small    # build the models, start both peers, check answers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchlib.infinity import DEFAULT_INFINITY_VENV
from benchlib.peers_check import check


def main() -> None:
    parser = argparse.ArgumentParser(description="Start each peer on random-weight models and check its answers.")
    parser.add_argument("--size", default="small")
    parser.add_argument("--venv", type=Path, default=DEFAULT_INFINITY_VENV)
    args = parser.parse_args()
    check(args.size, args.venv)


if __name__ == "__main__":
    main()
