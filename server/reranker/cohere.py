"""POST /v2/rerank, Cohere's v2 contract (what ``cohere.ClientV2.rerank`` and LiteLLM's ``cohere``
provider send), translated onto ``RerankService.rerank``. Cohere's v1 clients use /v1/rerank, whose
answer carries Cohere's ``meta`` already.

Cohere's defaults differ from SiliconFlow's: no ``top_n`` returns every document, and a document is
read up to ``max_tokens_per_doc`` tokens (4096), then windowed as on /v1/rerank.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.responses import Response

from server.api.nulls import NullMeansDefault
from server.api.responses import answer, services
from server.api.schema import ERROR_RESPONSES, PRIORITY_DESCRIPTION, Text
from server.api.terms import request_terms
from server.engine.fair_queue import Priority
from server.reranker import FAMILY
from server.reranker.render import cohere_meta, results
from server.reranker.schema import BilledUnits, DocumentObject, RerankRequest, RerankResult, RerankTokens
from server.reranker.service import Ranking

PATH = "/v2/rerank"
COHERE_MAX_TOKENS_PER_DOC = 4096

router = APIRouter()


class CohereRerankRequest(NullMeansDefault):
    # Unknown fields (rank_fields, relevant_spans, ...) are ignored.
    model_config = ConfigDict(extra="ignore")

    model: Text = Field(description="BAAI/bge-reranker-v2-m3 or bge-reranker-v2-m3.")
    query: Text
    documents: list[Text | DocumentObject] = Field(description="Texts (or {\"text\": ...} objects).")
    top_n: StrictInt | None = Field(None, ge=1, description="How many results to return; left out or null = all.")
    max_tokens_per_doc: StrictInt = Field(
        COHERE_MAX_TOKENS_PER_DOC, ge=1, description="Tokens of each document read; the rest is not scored.")
    return_documents: StrictBool = Field(False, description="Include each document's text (LiteLLM sends it).")
    # Cohere's own priority is an integer (0 = most urgent, its default); it is accepted and ignored,
    # because honouring 0 would make every Cohere request interactive. This server's words still work.
    priority: Priority | StrictInt = Field(
        "normal", description=PRIORITY_DESCRIPTION + " Cohere's integer priority is accepted and ignored.")


class ApiVersion(BaseModel):
    version: str = "2"


class CohereMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: RerankTokens


class CohereRerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: CohereMeta


def to_service(body: CohereRerankRequest) -> RerankRequest:
    return RerankRequest(
        model=body.model, query=body.query, documents=body.documents, top_n=body.top_n,
        return_documents=body.return_documents, max_tokens_per_doc=body.max_tokens_per_doc,
        priority=body.priority if isinstance(body.priority, str) else "normal",
    )


def cohere_body(ranking: Ranking) -> dict:
    meta = cohere_meta(ranking)
    return CohereRerankResponse(
        id=uuid.uuid4().hex, results=results(ranking),
        meta=CohereMeta(api_version=ApiVersion(), billed_units=meta.billed_units, tokens=meta.tokens),
    ).model_dump(exclude_none=True)


@router.post(PATH, response_model=CohereRerankResponse, responses=ERROR_RESPONSES, tags=["rerank"])
async def rerank_v2(body: CohereRerankRequest, request: Request) -> Response:
    """Cohere's v2 rerank: every document ranked unless top_n says otherwise."""
    service = services(request).lookup(FAMILY, body.model)
    req = to_service(body)
    ranking = await service.rerank(req, request_terms(request, req.priority), is_gone=request.is_disconnected)
    return await answer(request, FAMILY, ranking.usage, cohere_body(ranking))
