"""Plain ASGI middleware: request ids, latency metrics and internal errors; API keys; the body cap."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.auth import check_authorization
from server.errors import ApiError, error_body, error_response, internal_error_response
from server.metrics import Metrics

log = logging.getLogger(__name__)

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
        status, status_sent = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Answered here rather than by an exception handler: Starlette's ServerErrorMiddleware
            # re-raises after its handler, which makes uvicorn log twice and drop the keep-alive
            # connection. Here the client gets the fixed 500 and its connection stays usable.
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if status_sent:
                raise
            status = 500
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.request_seconds.labels(path, str(status)).observe(time.perf_counter() - started)


class ApiKeyGuard:
    """401 on protected paths without a right Bearer key, before anything reads the body."""

    def __init__(self, app: ASGIApp, keys: list[str], prefixes: tuple[str, ...]):
        self.app = app
        self.keys = keys
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"].startswith(self.prefixes):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                check_authorization(header, self.keys)
            except ApiError as err:
                return await error_response(err)(scope, receive, send)
        await self.app(scope, receive, send)


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
