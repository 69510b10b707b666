"""POST /v1/rerank: SiliconFlow's request and response (documents may also be Jina/Cohere {"text"}
objects), with the usage shapes of Jina (``usage``) and Cohere (``meta``) beside SiliconFlow's ``tokens``,
so each of those clients finds the figures it reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from server.api.nulls import NullMeansDefault
from server.api.schema import PRIORITY_DESCRIPTION, Text
from server.engine.fair_queue import Priority

MAX_OVERLAP_TOKENS = 80


class DocumentObject(BaseModel):
    text: Text


class RerankRequest(NullMeansDefault):
    model_config = ConfigDict(extra="ignore")

    model: Text = Field(description="BAAI/bge-reranker-v2-m3 or bge-reranker-v2-m3.")
    query: Text = Field(description="The query the documents are ranked against.")
    documents: list[Text | DocumentObject] = Field(description="Texts, or {\"text\": ...} objects.")
    top_n: StrictInt | None = Field(
        4, ge=1, description="How many results to return; more than the documents, or null, = all.")
    return_documents: StrictBool = Field(False, description="Include each document's text in its result.")
    max_chunks_per_doc: StrictInt = Field(
        1024, ge=1, description="Windows a long document is cut into at most; the rest of it is not scored."
    )
    overlap_tokens: StrictInt = Field(
        80, ge=0, le=MAX_OVERLAP_TOKENS, description="Tokens consecutive windows of one document share."
    )
    max_tokens_per_doc: StrictInt | None = Field(
        None, ge=1, description="Extension (Cohere's): score only each document's first N tokens; null = all of it."
    )
    raw_scores: StrictBool = Field(
        False, description="Extension (TEI's): relevance_score is the best window's logit, not its sigmoid."
    )
    use_activation: StrictBool | None = Field(
        None, description="vLLM's: false is raw_scores (the logit, without the sigmoid)."
    )
    priority: Priority = Field("normal", description=PRIORITY_DESCRIPTION)

    @model_validator(mode="after")
    def _use_activation_is_not_raw_scores(self) -> RerankRequest:
        if self.use_activation is not None:
            if "raw_scores" in self.model_fields_set and self.raw_scores == self.use_activation:
                raise ValueError("use_activation and raw_scores say different things; send one of them")
            self.raw_scores = not self.use_activation
        return self


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    document: RerankDocument | None = Field(None, description="Only with return_documents.")
    index: int = Field(description="Position in the request's documents.")
    relevance_score: float = Field(
        description="sigmoid(logit) of the document's best window, in (0, 1); the logit itself with raw_scores.")


class RerankTokens(BaseModel):
    input_tokens: int = Field(description="Tokens fed to the model over all (query, window) pairs.")
    output_tokens: int = 0


class RerankUsage(BaseModel):
    """Jina's usage: the same count as ``tokens.input_tokens``."""

    total_tokens: int
    prompt_tokens: int


class BilledUnits(BaseModel):
    search_units: int = Field(
        description="Cohere's unit: one per 100 (query, window) pairs, a window counting as a document.")


class RerankMeta(BaseModel):
    """Cohere's meta: ``tokens`` is SiliconFlow's count again."""

    billed_units: BilledUnits
    tokens: RerankTokens


class RerankResponse(BaseModel):
    id: str
    model: str = Field(description="The model named in the request (as Jina, vLLM and Infinity answer).")
    results: list[RerankResult]
    tokens: RerankTokens
    usage: RerankUsage
    meta: RerankMeta
