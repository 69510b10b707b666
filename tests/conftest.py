"""Shared fixtures: tiny models built once per session, and live servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from server.app import create_app
from server.config import Settings
from server.tiny_models.xlmr import build_tiny_bge_m3


@pytest.fixture(scope="session")
def bge_m3_dir(tmp_path_factory) -> Path:
    return build_tiny_bge_m3(tmp_path_factory.mktemp("models") / "bge-m3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, app, url: str):
        self.app = app
        self.url = url

    @property
    def runtime(self):
        return self.app.state.runtime

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)


@contextmanager
def live_server(**overrides) -> Iterator[LiveServer]:
    """A real uvicorn server in a thread, on a free loopback port, started with these settings."""
    opts = dict(reranker_model="none", asr_model="none", host="127.0.0.1", port=free_port(), log_level="warning")
    opts.update(overrides)
    settings = Settings(**opts)
    fatal: list[str] = []
    app = create_app(settings, on_fatal=fatal.append)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{settings.host}:{settings.port}"
    deadline = time.monotonic() + 120
    while not app.state.runtime.ready:
        assert not fatal, fatal
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)
    while not server.started:
        time.sleep(0.01)
    try:
        yield LiveServer(app, url)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def embed_server(bge_m3_dir) -> Iterator[LiveServer]:
    with live_server(embedding_model=str(bge_m3_dir)) as srv:
        yield srv
