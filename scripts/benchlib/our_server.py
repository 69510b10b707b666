"""This server as a system under test: started as its own process on 127.0.0.1 (``inference-server
serve``) serving one kind, and sent the benchmark's requests on its own API."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchlib.endpoint import Endpoint, Request
from benchlib.metrics import scrape_counters
from benchlib.models import KINDS
from server.background import free_port, started_process

OUR_PATHS = {"embedding": "/v1/embeddings", "reranker": "/v1/rerank", "asr": "/v1/audio/transcriptions"}


def our_send(kind: str):
    async def send(http: httpx.AsyncClient, req: Request) -> httpx.Response:
        if req.audio is not None:
            return await http.post(OUR_PATHS[kind], files={"file": ("clip.wav", req.audio)}, data=req.json)
        return await http.post(OUR_PATHS[kind], json=req.json)

    return send


@contextmanager
def our_server(kind: str, model_dir: Path, *, batch_size: int, dtype: str, name: str,
               extra: Sequence[str] = ()) -> Iterator[Endpoint]:
    """``extra``: more `serve` flags, e.g. ("--batch-scheduling", "fifo")."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    models = {k: str(model_dir) if k == kind else "none" for k in KINDS}
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--embedding-model", models["embedding"], "--reranker-model", models["reranker"],
           "--asr-model", models["asr"], "--max-batch-size", str(batch_size), "--dtype", dtype,
           "--log-level", "warning", "--offline", *extra]
    with started_process(cmd, f"{url}/ready"):
        yield Endpoint(name, our_send(kind), url, lambda: scrape_counters(url))
