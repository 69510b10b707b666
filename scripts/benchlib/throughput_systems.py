"""The systems the throughput benchmark runs on a workload, ours first: this server, the same with
batching off, optionally in another dtype or with fifo scheduling, and the peers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from benchlib.endpoint import Endpoint
from benchlib.our_server import our_server
from benchlib.throughput_workloads import Workload

OFFLINE, SERVER, SERVER_OFF = "offline reference (one call)", "server", "server, batching off"


def systems(wl: Workload, model_dir: Path, args) -> list[Callable[[], Iterator[Endpoint]]]:
    """Context managers that start each system for this workload, ours first."""
    kind = wl.kind
    found = [lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.dtype, name=SERVER)]
    if "batching-off" not in getattr(args, "skip", ()):
        found.append(lambda: our_server(kind, model_dir, batch_size=1, dtype=args.dtype, name=SERVER_OFF))
    if getattr(args, "compare_dtype", None):  # the same server in another dtype, side by side: what the dtype buys
        found.append(lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.compare_dtype,
                                        name=f"{SERVER}, {args.compare_dtype}"))
    if getattr(args, "compare_fifo", False):  # what fair and deadline scheduling cost where there is nothing to be fair about
        found.append(lambda: our_server(kind, model_dir, batch_size=args.max_batch_size, dtype=args.dtype,
                                        name=f"{SERVER}, fifo",
                                        extra=("--batch-scheduling", "fifo", "--no-deadline-scheduling")))
    if args.peers and wl.peers:
        from benchlib import peers

        peer = peers.peer_for(kind, model_dir, args.peers_dir)
        if peer is not None:
            found.append(peer)
    return found
