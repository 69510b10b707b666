"""POST /rerank, TEI's contract (what LiteLLM's ``huggingface`` rerank provider sends), translated onto
``RerankService.rerank``: ``{query, texts, raw_scores, return_text}`` in, ``[{index, score, text?}]``
out, highest score first, every text ranked.

``truncate`` and ``truncation_direction`` are accepted and change nothing: a text longer than a pair
holds is scored by its best window (as on /v1/rerank) instead of being cut or refused.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.responses import Response

from server.api.nulls import NullMeansDefault
from server.api.responses import answer, services
from server.api.schema import PRIORITY_DESCRIPTION, Text
from server.api.terms import request_terms
from server.engine.fair_queue import Priority
from server.errors import InvalidRequest
from server.reranker import FAMILY, SPEC
from server.reranker.schema import RerankRequest
from server.reranker.service import Ranking
from server.tei import compute_headers
from server.tei.schema import TEI_ERROR_RESPONSES, TruncationDirection

PATH = "/rerank"

router = APIRouter()


class TeiRerankRequest(NullMeansDefault):
    model_config = ConfigDict(extra="ignore")

    query: Text
    texts: list[Text]
    truncate: StrictBool = Field(False, description="Accepted; long texts are scored by their best window.")
    truncation_direction: TruncationDirection = "Right"
    raw_scores: StrictBool = Field(False, description="The best window's logit instead of its sigmoid.")
    return_text: StrictBool = False
    top_n: StrictInt | None = Field(None, ge=1, description="Extension: return only the best N; null = all (TEI's).")
    priority: Priority = Field("normal", description=PRIORITY_DESCRIPTION)


class Rank(BaseModel):
    index: int
    text: str | None = None
    score: float


def to_service(body: TeiRerankRequest) -> RerankRequest:
    if not body.texts:
        raise InvalidRequest("`texts` cannot be empty", param="texts", code="empty")
    return RerankRequest(model=SPEC.served_name, query=body.query, documents=body.texts, top_n=body.top_n,
                         return_documents=body.return_text, raw_scores=body.raw_scores, priority=body.priority)


def tei_body(ranking: Ranking) -> list[dict]:
    return [Rank(index=r.index, text=r.text, score=r.score).model_dump(exclude_none=True) for r in ranking.results]


@router.post(PATH, response_model=list[Rank], responses=TEI_ERROR_RESPONSES, tags=["tei"])
async def tei_rerank(body: TeiRerankRequest, request: Request) -> Response:
    """TEI's rerank on bge-reranker-v2-m3; x-compute-tokens says how many tokens were fed to the model."""
    service = services(request).lookup(FAMILY, SPEC.served_name)
    req = to_service(body)
    ranking = await service.rerank(req, request_terms(request, req.priority), is_gone=request.is_disconnected)
    characters = len(body.query) * len(body.texts) + sum(map(len, body.texts))
    return await answer(request, FAMILY, ranking.usage, tei_body(ranking), compute_headers(ranking.usage, characters))
