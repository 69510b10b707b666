"""POST /v1/rerank: SiliconFlow's request and response (documents may also be Jina/Cohere {"text"} objects)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from server.api.schema import PRIORITY_DESCRIPTION, Text
from server.engine.fair_queue import Priority

MAX_OVERLAP_TOKENS = 80


class DocumentObject(BaseModel):
    text: Text


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Text = Field(description="BAAI/bge-reranker-v2-m3 or bge-reranker-v2-m3.")
    query: Text = Field(description="The query the documents are ranked against.")
    documents: list[Text | DocumentObject] = Field(description="Texts, or {\"text\": ...} objects.")
    top_n: StrictInt = Field(4, ge=1, description="How many results to return; more than the documents = all.")
    return_documents: bool = Field(False, description="Include each document's text in its result.")
    max_chunks_per_doc: StrictInt = Field(
        1024, ge=1, description="Windows a long document is cut into at most; the rest of it is not scored."
    )
    overlap_tokens: StrictInt = Field(
        80, ge=0, le=MAX_OVERLAP_TOKENS, description="Tokens consecutive windows of one document share."
    )
    priority: Priority = Field("normal", description=PRIORITY_DESCRIPTION)


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    document: RerankDocument | None = Field(None, description="Only with return_documents.")
    index: int = Field(description="Position in the request's documents.")
    relevance_score: float = Field(description="sigmoid(logit) of the document's best window, in (0, 1).")


class RerankTokens(BaseModel):
    input_tokens: int = Field(description="Tokens fed to the model over all (query, window) pairs.")
    output_tokens: int = 0


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    tokens: RerankTokens
