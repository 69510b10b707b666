"""Plain ASGI middleware: request ids, latency metrics and internal errors; API keys; the body cap;
slow bodies and contradictory framing."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.auth import authorized_tenant
from server.api.route_labels import RouteLabels
from server.api.terms import ARRIVED, TENANT
from server.errors import (
    ApiError,
    InvalidRequest,
    PayloadTooLarge,
    ShuttingDown,
    error_response,
    internal_error_response,
)
from server.metrics import Metrics

log = logging.getLogger(__name__)

REQUEST_ID = b"x-request-id"


class RequestContext:
    """Echo the caller's X-Request-ID (or make one) and record latency per route and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self.route_label = RouteLabels()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(REQUEST_ID, b"")
        # Echoed in a response header and written to the log: printable ASCII only (no control
        # characters to forge log lines or terminal escapes), else a fresh id.
        request_id = given[:128] if given and all(0x20 < c < 0x7F for c in given[:128]) else uuid.uuid4().hex.encode()
        started = time.perf_counter()
        scope.setdefault("state", {})[ARRIVED] = time.monotonic()
        status, status_sent = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # Only uvicorn cancels a request's task: its shutdown grace period ended with this one
            # still running (an upload still being decoded, say; queued work was answered when the
            # batchers' drain gave up). The client gets the JSON 503 the README promises, not
            # uvicorn's text/plain 500, and the log one line instead of a traceback.
            if status_sent:
                raise
            log.warning("%s %s: still running when the shutdown grace period ended; answered 503",
                        scope.get("method"), scope.get("path"))
            status = 503
            await error_response(ShuttingDown("The server shut down before this request was done; retry on "
                                              "another replica."), scope)(scope, receive, send_with_id)
        except Exception:
            # Answered here rather than by an exception handler: Starlette's ServerErrorMiddleware
            # re-raises after its handler, which makes uvicorn log twice and drop the keep-alive
            # connection. Here the client gets the fixed 500 and its connection stays usable.
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if status_sent:
                raise
            status = 500
            await internal_error_response(scope)(scope, receive, send_with_id)
        finally:
            route = self.route_label(scope)
            self.metrics.request_seconds.labels(route, str(status)).observe(time.perf_counter() - started)


class ApiKeyGuard:
    """401 on protected paths (under ``prefixes``, or one of ``paths``) without a right Bearer key,
    before anything reads the body. A CORS preflight (OPTIONS) never carries the key, by the Fetch
    standard, so OPTIONS passes: it reads nothing and runs nothing. The key's tenant is left in the
    scope's state for the batcher's fair sharing (server.api.terms)."""

    def __init__(self, app: ASGIApp, keys: list[str], prefixes: tuple[str, ...],
                 paths: frozenset[str] = frozenset()):
        self.app = app
        self.keys = keys
        self.prefixes = prefixes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] == "http" and self.keys and scope["method"] != "OPTIONS"
                and (path.startswith(self.prefixes) or path in self.paths)):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                scope.setdefault("state", {})[TENANT] = authorized_tenant(header, self.keys)
            except ApiError as err:
                return await error_response(err, scope)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over the cap of its path (``per_path``, else ``max_bytes``), checked on
    Content-Length and again while it streams in, so a chunked upload cannot make the server hold
    more than the cap.

    ``per_path`` maps a path to its cap and the refusal's message: an upload's cap leaves room for
    the multipart framing around the file, and the message states the documented limit, not the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, tuple[int, str]] | None = None):
        self.app = app
        self.default = (max_bytes, f"The request body is larger than {max_bytes} bytes.")
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, message = self.per_path.get(scope["path"], self.default)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await error_response(PayloadTooLarge(message), scope)(scope, receive, send)
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


class SlowBody:
    """A body that stops arriving is a 408, and framing that contradicts itself a 400, whatever
    route the request is for.

    A client that declared a Content-Length and sent less, or trickled its body, held a connection
    and a request's state for as long as it liked. Each wait for the next piece of the body is
    bounded by ``timeout`` (the pieces, not the whole: a large upload on a slow link goes on while
    it keeps sending), and the connection is closed after the 408. A request with both
    Content-Length and Transfer-Encoding (RFC 9112, section 6.1: a sign of request smuggling
    through a proxy that reads the other one) hung waiting for chunks; it is refused at once."""

    def __init__(self, app: ASGIApp, timeout: float):
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if b"content-length" in headers and b"transfer-encoding" in headers:
            refusal = InvalidRequest("The request has both Content-Length and Transfer-Encoding; send one of them.",
                                     code="invalid_framing", headers={"Connection": "close"})
            return await error_response(refusal, scope)(scope, receive, send)
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()  # a disconnect check: it may wait as long as the request runs
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                # An HTTPException: raised while a route parses its body, it is not rewrapped as a 400.
                raise HTTPException(408, f"The request body stopped arriving: nothing for {self.timeout:g} s.",
                                    headers={"Connection": "close"}) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)
