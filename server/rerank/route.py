"""POST /v1/rerank (SiliconFlow shape)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.responses import json_response, runtime
from server.models.store import RERANKER
from server.schemas.common import ERROR_RESPONSES
from server.schemas.rerank import RerankRequest, RerankResponse

router = APIRouter()


@router.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES, tags=["rerank"])
async def rerank(body: RerankRequest, request: Request) -> Response:
    """Rank documents by relevance to the query; long documents are scored by their best window."""
    service = runtime(request).lookup(RERANKER.kind, body.model)
    payload = await service.rerank(body, is_gone=request.is_disconnected)
    request.app.state.metrics.tokens.labels(RERANKER.served_name).inc(payload["tokens"]["input_tokens"])
    return await json_response(payload)
