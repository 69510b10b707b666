"""POST /v1/embeddings (OpenAI shape); the family's router also carries TEI's /embed, / and
/embed_sparse (server/embedding/tei.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.responses import answer, services
from server.api.schema import ERROR_RESPONSES
from server.api.terms import request_terms
from server.embedding import FAMILY, tei
from server.embedding.render import openai_body
from server.embedding.schema import EmbeddingRequest, EmbeddingResponse

router = APIRouter()
router.include_router(tei.router)


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERROR_RESPONSES, tags=["embeddings"])
async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Dense bge-m3 vectors; `return_sparse` / `return_colbert` add bge-m3's other two outputs."""
    service = services(request).lookup(FAMILY, body.model)
    embedded = await service.create(body, request_terms(request, body.priority), is_gone=request.is_disconnected)
    return await answer(request, FAMILY, embedded.usage, openai_body(embedded, body, service.token_text))
