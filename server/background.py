"""Run a server in the background, for benchmarks, scripts and tests: on a thread of this process
(``serve_in_thread``), or as a process of its own (``started_process``: this server's CLI or a peer's)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from server.app import create_app
from server.config import Settings
from server.http_server import http_config


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
    server = uvicorn.Server(http_config(app, settings, log_level="warning"))
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


@contextmanager
def started_process(cmd: list[str], ready_url: str, *, ready_timeout: float = 600,
                    env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in a process group of its own, wait until ``ready_url`` answers 200, and stop
    the group on exit (SIGTERM, then SIGKILL), on errors too.

    Its output goes to a temporary file whose tail is in the error if it dies or never gets ready,
    rather than to a pipe nobody reads (a full pipe would block the process)."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            deadline = time.monotonic() + ready_timeout
            while not _answers_200(ready_url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read()[-3000:]
                    state = f"exited with {proc.returncode}" if proc.poll() is not None else "was not ready in time"
                    raise RuntimeError(f"{Path(cmd[0]).name} {state}:\n{tail}")
                time.sleep(0.2)
            yield proc
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen, grace_s: float = 30) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)  # the group: a server's own children go too
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused while starting, 503 while loading (HTTPError is an OSError), timeouts
        return False
