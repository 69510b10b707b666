"""Helpers the routers share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.family import Family, Services, Usage


def services(request: Request) -> Services:
    """The served models, as a family's routes see them: ``services(request).lookup(FAMILY, name)``."""
    return request.app.state.runtime


async def json_response(payload: Any) -> Response:
    """Serialize off the event loop. orjson writes numpy vectors directly, as the shortest decimal
    that round-trips each float32: 64 x 1024 floats take ~2 ms and 0.7 MB, against ~40 ms and
    1.3 MB for json.dumps of Python lists."""
    body = await run_in_threadpool(orjson.dumps, payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, media_type="application/json")


def count(request: Request, family: Family[Any, Any, Any], usage: Usage) -> None:
    """A request's usage into the metrics: every route's, through here (``answer``, and the
    transcription stream when it ends)."""
    request.app.state.metrics.count(family.spec.served_name, usage)


async def answer(request: Request, family: Family[Any, Any, Any], usage: Usage, body: Any,
                 headers: Mapping[str, str] | None = None) -> Response:
    """How a family's route answers: its usage counted, then ``body`` as JSON (or as the response
    it already is: a subtitle file, say), with ``headers``."""
    count(request, family, usage)
    response = body if isinstance(body, Response) else await json_response(body)
    response.headers.update(headers or {})
    return response
