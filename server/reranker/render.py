"""A ranking in /v1/rerank's answer: SiliconFlow's, with the usage shapes of Jina (``usage``) and
Cohere (``meta``) beside SiliconFlow's ``tokens``, so each of those clients finds the figures it reads.
Cohere's v2 and TEI's answers are rendered beside their routes (server/reranker/cohere.py, tei.py)."""

from __future__ import annotations

import math
import uuid

from server.reranker.schema import (
    BilledUnits,
    RerankDocument,
    RerankMeta,
    RerankResponse,
    RerankResult,
    RerankTokens,
    RerankUsage,
)
from server.reranker.service import Ranking


def results(ranking: Ranking) -> list[RerankResult]:
    return [RerankResult(index=r.index, relevance_score=r.score,
                         document=RerankDocument(text=r.text) if r.text is not None else None)
            for r in ranking.results]


def cohere_meta(ranking: Ranking) -> RerankMeta:
    """Cohere's billing: a search unit is 100 documents, each window of a long one counting as one."""
    return RerankMeta(billed_units=BilledUnits(search_units=math.ceil(ranking.pairs / 100)),
                      tokens=RerankTokens(input_tokens=ranking.usage.input_tokens))


def siliconflow_body(ranking: Ranking, model: str) -> dict:
    tokens = ranking.usage.input_tokens
    return RerankResponse(
        id=uuid.uuid4().hex, model=model, results=results(ranking), tokens=RerankTokens(input_tokens=tokens),
        usage=RerankUsage(total_tokens=tokens, prompt_tokens=tokens), meta=cohere_meta(ranking),
    ).model_dump(exclude_none=True)
