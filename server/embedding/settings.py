"""The embedding family's settings: ``--embedding-<field>``, ``INFERENCE_EMBEDDING_<FIELD>``."""

from __future__ import annotations

from pydantic import Field

from server.config import FamilySettings


class EmbeddingSettings(FamilySettings):
    model: str = Field("BAAI/bge-m3", description="bge-m3: a local directory, a hub id, or none.")
    max_tokens: int = Field(
        8192, ge=2, description="Longest input (tokens, incl. <s></s>) bge-m3 accepts; longer is 400 unless truncated."
    )
