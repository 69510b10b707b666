"""Peer servers for the benchmark: other inference servers run on the same model directories and
driven with the same workload as ours, on 127.0.0.1 only: Infinity for embeddings and rerank
(benchlib/infinity.py), funasr's own funasr-server for transcription (benchlib/funasr_server.py).

``peer_for(kind, model_dir, peers_dir)`` is what the benchmark calls: it starts the peer for a kind
and yields an endpoint whose ``send`` translates the benchmark's request into the peer's dialect.
``infinity_request`` and ``funasr_request`` do that translation on their own, returning
``{"path": ..., "kwargs": {...}}`` for ``httpx.AsyncClient.post(path, **kwargs)``. Every wait is
bounded, and each server subprocess (its whole process group) is stopped when its ``with`` block
ends, on errors too.

    python scripts/peers.py --size small    # build the models, start both peers, check answers
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx

from benchlib.endpoint import Endpoint, Request
from benchlib.funasr_server import funasr_request, funasr_version, start_funasr_server
from benchlib.infinity import (
    INFINITY_PINS,
    SERVED_NAMES,
    infinity_ready,
    infinity_request,
    start_infinity,
)
from benchlib.peer_process import CACHE
from server.background import free_port


def peer_for(kind: str, model_dir: Path, peers_dir: Path = CACHE,
             threads: int | None = None) -> Callable[[], AbstractContextManager[Endpoint]] | None:
    """For the benchmark: a function that starts the peer serving ``kind`` on ``model_dir`` and
    returns a context manager yielding its Endpoint (no batch counters: a peer has no /metrics to
    scrape), or None for a kind without a peer. Infinity's venv is ``peers_dir / "infinity-venv"``.
    The endpoint's ``send`` takes a Request (``.json``: our JSON body, ``.audio``: WAV bytes) and
    sends the same request in the peer's dialect."""
    if kind in SERVED_NAMES:
        @contextmanager
        def infinity() -> Iterator[Endpoint]:
            async def send(http: httpx.AsyncClient, req: Request) -> httpx.Response:
                r = infinity_request(kind, req.json)
                return await http.post(r["path"], **r["kwargs"])

            venv = Path(peers_dir) / "infinity-venv"
            with start_infinity(venv, kind, model_dir, free_port(), threads=threads) as peer:
                yield Endpoint(f"Infinity {INFINITY_PINS[0].split('==')[1]}", send, peer.url)

        return infinity
    if kind == "asr":
        @contextmanager
        def funasr() -> Iterator[Endpoint]:
            async def send(http: httpx.AsyncClient, req: Request) -> httpx.Response:
                r = funasr_request(req.audio, "clip.wav")
                return await http.post(r["path"], **r["kwargs"])

            with start_funasr_server(model_dir, free_port(), threads=threads) as peer:
                yield Endpoint(f"funasr-server {funasr_version()}", send, peer.url)

        return funasr
    return None


def installed_peer(kind: str, model_dir: Path,
                   peers_dir: Path = CACHE) -> Callable[[], AbstractContextManager[Endpoint]] | None:
    """``peer_for(kind, ...)`` where that peer can start without installing anything; else None, and
    a line saying why it is skipped."""
    missing = unavailable(kind, peers_dir)
    if missing:
        print(f"  {kind}: peer skipped: {missing}", flush=True)
        return None
    return peer_for(kind, model_dir, peers_dir)


def unavailable(kind: str, peers_dir: Path = CACHE) -> str | None:
    """Why the peer for ``kind`` cannot start without installing anything, or None if it can: for
    workloads that skip a missing peer rather than build its venv (minutes, from PyPI)."""
    venv = Path(peers_dir) / "infinity-venv"
    if kind in SERVED_NAMES and not infinity_ready(venv):
        return (f"Infinity is not installed: no complete venv at {venv} (`python scripts/peers.py --venv {venv}`, "
                "or scripts/bench.py --peers without --mixed, builds it: about 2 minutes from PyPI)")
    if kind == "asr":
        import importlib.util

        if importlib.util.find_spec("funasr") is None:
            return "funasr-server is not installed: no funasr package in this environment"
    return None
