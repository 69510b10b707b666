"""Plain ASGI middleware: request ids, latency metrics, and the request-body cap."""

from __future__ import annotations

import time
import uuid

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_body
from server.metrics import Metrics

REQUEST_ID = b"x-request-id"


class RequestContext:
    """Echo the caller's X-Request-ID (or make one) and record latency per route and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(REQUEST_ID, b"")
        request_id = given[:128] if given and given.isascii() else uuid.uuid4().hex.encode()
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.request_seconds.labels(path, str(status)).observe(time.perf_counter() - started)


class BodyLimit:
    """413 for a body over the cap of its path (``per_path``, else ``max_bytes``), checked on
    Content-Length and again while it streams in, so a chunked upload cannot make the server hold
    more than the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.per_path.get(scope["path"], self.max_bytes)
        message = f"The request body is larger than {limit} bytes."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = error_body(message, "invalid_request_error", None, "payload_too_large")
            return await JSONResponse(body, 413)(scope, receive, send)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, message)
            return received

        await self.app(scope, counting_receive, send)
