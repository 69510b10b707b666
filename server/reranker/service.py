"""Request preparation for /v1/rerank: tokenize, cut long documents into overlapping windows that
fit the reranker's pair length, queue every (query, window) pair on the batcher, and score each
document by its best window. The other rerank dialects (Cohere's /v2/rerank, TEI's /rerank) are
translated onto ``RerankService.rerank`` and reshape its answer.

The rules (documented in the README):
* The query is cut to 3/4 of the pair length, as FlagReranker does (``query_max_length``), so a
  long query never leaves a document without room; the cut is counted in ``input_tokens``.
* A document of ``n`` tokens with ``room`` = pair length - query - special tokens is one window if
  ``n <= room``; else windows of ``room`` tokens start every ``room - overlap`` tokens until one
  reaches the end, at most ``max_chunks_per_doc`` of them (the rest of the document is not scored).
  The overlap is capped at half the room so windows always advance.
* ``max_tokens_per_doc`` (Cohere's) keeps only a document's first N tokens before it is windowed.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.config import Settings
from server.engine.batching import Batcher, gather_results
from server.engine.deadlines import Terms
from server.errors import InvalidRequest, PayloadTooLarge
from server.family import Usage
from server.compute.xlmr_common import TextModelDescription, Token, tokens_within
from server.reranker.model import BgeReranker
from server.reranker.schema import RerankRequest
from server.reranker.settings import RerankerSettings


def plan_windows(length: int, room: int, overlap: int, max_chunks: int) -> list[tuple[int, int]]:
    """Token spans [start, end) of a document's windows."""
    if length <= room:
        return [(0, length)]
    stride = room - min(overlap, room // 2)
    spans: list[tuple[int, int]] = []
    start = 0
    while len(spans) < max_chunks:
        spans.append((start, min(start + room, length)))
        if start + room >= length:
            break
        start += stride
    return spans


def sigmoid(x: float) -> float:
    # The two branches avoid overflow of exp() for logits far from zero.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True)
class RankedDocument:
    index: int  # its place in the request's documents
    score: float  # sigmoid of its best window's logit (the logit itself with raw_scores)
    text: str | None = None  # with return_documents


@dataclass(frozen=True)
class Ranking:
    """One request's documents, best first (``top_n`` of them), and what it fed the model."""

    results: list[RankedDocument]
    usage: Usage
    pairs: int  # (query, window) pairs scored: each window of a long document counts as one


class RerankService:
    def __init__(self, model: BgeReranker, batcher: Batcher, *, max_length: int, max_documents: int,
                 max_tokens: int):
        self.model = model
        self.batcher = batcher
        self.max_length = min(max_length, model.max_tokens)
        self.max_query_tokens = self.max_length * 3 // 4
        self.max_documents = max_documents
        self.max_tokens = max_tokens

    @classmethod
    def from_settings(cls, model: BgeReranker, batcher: Batcher, own: RerankerSettings,
                      settings: Settings) -> RerankService:
        return cls(model, batcher, max_length=own.max_length, max_documents=own.max_documents,
                   max_tokens=own.max_tokens)

    def describe(self) -> TextModelDescription:
        return TextModelDescription("reranker", self.model.device, self.max_length, self.max_documents,
                                    labels=self.model.labels)

    async def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[Token]]:
        """Each text's tokens as a person reads them (TEI's /tokenize)."""
        return await self.batcher.gate.run_preparation(tokens_within, self.model.tokenizer, texts, add_special_tokens,
                                                       self.model.max_tokens * self.model.max_piece_chars)

    async def rerank(self, req: RerankRequest, terms: Terms,
                     is_gone: Callable[[], Awaitable[bool]] | None = None) -> Ranking:
        texts = [d if isinstance(d, str) else d.text for d in req.documents]
        if not req.query.strip():
            raise InvalidRequest("query must not be empty.", param="query")
        if not texts:
            raise InvalidRequest("documents must not be empty.", param="documents")
        if len(texts) > self.max_documents:
            raise InvalidRequest(
                f"documents has {len(texts)} items; at most {self.max_documents} per request.", param="documents"
            )
        with self.batcher.admission(terms) as admission:
            pairs, owners = await self.batcher.gate.run_preparation(self._pairs, req, texts)
            tokens = sum(len(p) for p in pairs)
            if tokens > self.max_tokens:
                raise PayloadTooLarge(
                    f"This request would feed {tokens} tokens to the reranker; at most {self.max_tokens}. "
                    "Send fewer or shorter documents (on /v1/rerank, a lower max_chunks_per_doc scores fewer "
                    "windows of each)."
                )
            futures = admission.submit([(p, len(p)) for p in pairs])
        logits = await gather_results(futures, terms, is_gone)

        best = [-math.inf] * len(texts)
        for owner, logit in zip(owners, logits):
            best[owner] = max(best[owner], logit)
        scores = best if req.raw_scores else [sigmoid(b) for b in best]
        ranked = sorted(range(len(texts)), key=lambda i: -scores[i])[: req.top_n]  # stable: ties keep order
        results = [RankedDocument(i, scores[i], texts[i] if req.return_documents else None) for i in ranked]
        return Ranking(results, Usage(tokens), len(pairs))

    def _pairs(self, req: RerankRequest, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Every (query, window) pair as model input ids, with the document each belongs to."""
        query_chars = (self.max_query_tokens + 1) * self.model.max_piece_chars
        query_ids = self.model.tokenize([req.query], query_chars)[0][: self.max_query_tokens]
        room = self.max_length - len(query_ids) - self.model.pair_overhead
        pairs, owners = [], []
        # Text past what max_chunks_per_doc windows (or max_tokens_per_doc) can hold is never scored:
        # do not tokenize it.
        max_doc_tokens = min(req.max_chunks_per_doc * room, req.max_tokens_per_doc or math.inf)
        max_chars = (max_doc_tokens + 1) * self.model.max_piece_chars
        for index, doc_ids in enumerate(self.model.tokenize(texts, max_chars)):
            doc_ids = doc_ids[: req.max_tokens_per_doc]  # [:None] keeps it all
            for start, end in plan_windows(len(doc_ids), room, req.overlap_tokens, req.max_chunks_per_doc):
                pairs.append(self.model.pair(query_ids, doc_ids[start:end]))
                owners.append(index)
        return pairs, owners
