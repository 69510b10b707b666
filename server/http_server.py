"""uvicorn as this service runs it: the connection limits and timeouts that keep slow or hostile
clients from holding connections, and a shutdown that drains the batchers from its start.

``http_config`` is used by the CLI and by ``server.background`` alike, so the tests run the same
server a deployment does."""

from __future__ import annotations

import asyncio
import math
import socket

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.config import Settings
from server.runtime import Runtime


def http_config(app: FastAPI, settings: Settings, log_level: str | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level or settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
        # Past this many connections (or requests in flight) uvicorn answers 503 at once.
        limit_concurrency=settings.max_connections,
        http=header_timeout_protocol(settings.header_read_timeout),
    )


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request line and headers have not
    all arrived ``seconds`` after it opened, or after the first byte of its next request.

    uvicorn bounds only the idle time between requests (its keep-alive timeout, which any byte
    resets): 30 connections that each sent one header byte a second stayed open for as long as
    the test ran, and a few hundred would take every connection the server allows. The clock
    starts at the connection or the first byte and is not reset by more bytes, so trickling
    cannot stretch it. The body has its own limit (server.api.middleware.SlowBody)."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()  # part of a request's head: its clock runs from its first byte
            elif self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.logger.info("%s: closed, the request's headers did not arrive within %g s",
                                 "%s:%d" % self.client if self.client else "a client", seconds)
                self.transport.close()

    return HeaderTimeoutProtocol


class DrainingServer(uvicorn.Server):
    """On SIGTERM uvicorn stops accepting, waits up to its grace period for the requests in flight,
    cancels those still running (and answers them text/plain 500), and only then runs the
    application's shutdown, which drained the batchers: too late for a long transcription. Here the
    drain starts with the shutdown, beside uvicorn's wait: queued work goes on being computed, and
    what is not done a second before the grace period ends is answered 503 ``shutting_down`` in
    the caller's shape (a stream: its error event) while uvicorn still waits for it."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, grace_s: float):
        super().__init__(config)
        self._runtime = runtime
        self._drain_s = max(0.0, grace_s - 1.0)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = asyncio.ensure_future(self._runtime.close(timeout=self._drain_s))
        try:
            await super().shutdown(sockets)
        finally:
            await drain
        # Requests uvicorn cancelled at the end of the grace period (one still being prepared)
        # answer their 503 as they unwind (server.api.middleware); uvicorn does not wait for them,
        # and the loop's own end would cancel them again, mid-answer.
        cancelled = [task for task in self.server_state.tasks if not task.done()]
        if cancelled:
            await asyncio.wait(cancelled, timeout=1.0)
