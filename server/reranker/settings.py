"""The reranker family's settings: ``--reranker-<field>``, ``INFERENCE_RERANKER_<FIELD>``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from server.config import FamilySettings


class RerankerSettings(FamilySettings):
    model: str = Field(
        "BAAI/bge-reranker-v2-m3", description="bge-reranker-v2-m3: a local directory, a hub id, or none."
    )
    max_length: int = Field(
        512, ge=64, le=8192,
        description="Tokens of one (query, document window) pair fed to the reranker, as FlagReranker's max_length.",
    )
    max_documents: int = Field(1000, ge=1, description="Documents in one rerank request.")
    max_tokens: int = Field(
        1_000_000, ge=1, description="Tokens one rerank request may feed the model, over all its pairs (413 past it)."
    )

    former_names: ClassVar[dict[str, str]] = {"max_documents": "rerank_max_documents", "max_tokens": "rerank_max_tokens"}
