"""Probes and metrics: GET or HEAD /health (liveness) and /ready (readiness), /metrics (Prometheus);
GET / says where the docs are."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from server.runtime import runtime

router = APIRouter(tags=["operations"])
# Separate, so the app can put it behind the API key (--protect-metrics) while probes stay open.
metrics_router = APIRouter(tags=["operations"])


@router.get("/", include_in_schema=False)
async def root() -> dict:
    """Where to look: a browser or curl pointed at the bare address gets directions, not a 405."""
    return {"name": "inference-server", "docs": "/docs", "openapi": "/openapi.json", "health": "/health",
            "ready": "/ready"}


# HEAD too: load balancers and uptime checkers probe with it.
@router.head("/health", include_in_schema=False)
@router.get("/health")
async def health() -> dict:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.head("/ready", include_in_schema=False)
@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 once every configured model is loaded; 503 while loading or draining."""
    rt = runtime(request)
    body = {
        "status": "ready" if rt.ready else ("draining" if rt.closing else "loading"),
        "models": {kind: kind in rt.served for kind in rt.configured},
    }
    return JSONResponse(body, status_code=200 if rt.ready else 503)


@metrics_router.get("/metrics", response_class=PlainTextResponse,
                    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                     "description": "Prometheus text exposition format."}})
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
