"""Run the server on a background thread of this process, for benchmarks, scripts and tests that
want a real HTTP server without a subprocess."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from server.app import create_app
from server.config import Settings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    app: FastAPI
    url: str

    @property
    def runtime(self):
        return self.app.state.runtime


@contextmanager
def serve_in_thread(settings: Settings, ready_timeout: float = 300) -> Iterator[RunningServer]:
    """Start uvicorn with these settings, wait until every model is loaded, stop it on exit."""
    fatal: list[str] = []
    app = create_app(settings, on_fatal=fatal.append)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    try:
        while not (server.started and app.state.runtime.ready):
            if fatal:
                raise RuntimeError(fatal[0])
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the server did not become ready")
            time.sleep(0.02)
        yield RunningServer(app, f"http://{settings.host}:{settings.port}")
    finally:
        server.should_exit = True
        thread.join(60)
