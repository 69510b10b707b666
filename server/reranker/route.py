"""POST /v1/rerank (SiliconFlow shape, with Jina's and Cohere's usage fields); the family's router
also carries its other dialects: Cohere's POST /v2/rerank and TEI's POST /rerank."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.responses import answer, services
from server.api.schema import ERROR_RESPONSES
from server.api.terms import request_terms
from server.reranker import FAMILY, cohere, tei
from server.reranker.render import siliconflow_body
from server.reranker.schema import RerankRequest, RerankResponse

router = APIRouter()
router.include_router(cohere.router)
router.include_router(tei.router)


@router.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES, tags=["rerank"])
async def rerank(body: RerankRequest, request: Request) -> Response:
    """Rank documents by relevance to the query; long documents are scored by their best window."""
    service = services(request).lookup(FAMILY, body.model)
    ranking = await service.rerank(body, request_terms(request, body.priority), is_gone=request.is_disconnected)
    return await answer(request, FAMILY, ranking.usage, siliconflow_body(ranking, body.model))
