"""Helpers the routers share."""

from __future__ import annotations

import json

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.runtime import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def json_response(payload: dict) -> Response:
    """Serialize off the event loop: a response of thousands of vectors takes tens of milliseconds."""
    body = await run_in_threadpool(json.dumps, payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, media_type="application/json")
