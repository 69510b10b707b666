"""uvicorn's server, with the batchers' drain started as soon as shutdown begins."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from server.engine.runtime import Runtime


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
