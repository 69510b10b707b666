"""POST /v1/embeddings: OpenAI's request and response, plus bge-m3's opt-in sparse and ColBERT outputs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from server.api.nulls import NullMeansDefault
from server.api.schema import PRIORITY_DESCRIPTION, Text
from server.engine.fair_queue import Priority

TokenIds = list[Annotated[StrictInt, Field(ge=0)]]


class EmbeddingRequest(NullMeansDefault):
    # Unknown fields are ignored, as clients (LangChain, LlamaIndex) send a few of their own.
    model_config = ConfigDict(extra="ignore")

    input: Text | list[Text] | TokenIds | list[TokenIds] = Field(
        description="A text, a list of texts, a list of token ids, or a list of token-id lists."
    )
    model: Text = Field(description="bge-m3 or BAAI/bge-m3.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: little-endian float32 bytes, base64-encoded."
    )
    dimensions: StrictInt | None = Field(None, description="Accepted only when equal to the model's (1024).")
    # --- vLLM's ---
    embed_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="vLLM's: the type of each number: base64 bytes in it (float16 halves them); "
        "float numbers rounded to it."
    )
    endianness: Literal["native", "little", "big"] = Field(
        "native", description="vLLM's: the byte order of base64 numbers (native: this server's, little)."
    )
    truncate_prompt_tokens: StrictInt | None = Field(
        None, description="vLLM's: keep only the last k tokens of each input (<s> and </s> counted); -1: as many as "
        "the model takes (8192)."
    )
    use_activation: StrictBool | None = Field(
        None, description="vLLM's name for normalize on an embedding model: false returns the vector before "
        "L2 normalization."
    )

    @model_validator(mode="after")
    def _use_activation_is_normalize(self) -> EmbeddingRequest:
        if self.use_activation is not None:
            if "normalize" in self.model_fields_set and self.normalize != self.use_activation:
                raise ValueError("use_activation and normalize say different things; send one of them")
            self.normalize = self.use_activation
        return self
    user: str | None = Field(None, description="Accepted and ignored.")
    # --- extensions (send with the openai SDK through extra_body) ---
    truncate: StrictBool = Field(
        False, description="Extension: cut inputs longer than the model's limit instead of answering 400."
    )
    return_sparse: StrictBool = Field(
        False, description="Extension: add `sparse_embedding`, bge-m3's lexical weights (token -> weight)."
    )
    sparse_format: Literal["id", "token"] = Field(
        "id", description="Extension: key lexical weights by token id (as a string) or by token text."
    )
    return_colbert: StrictBool = Field(
        False, description="Extension: add `colbert_embedding`, one normalized vector per token after <s>."
    )
    normalize: StrictBool = Field(
        True, description="Extension (TEI's): false returns the dense vector before L2 normalization."
    )
    priority: Priority = Field("normal", description=PRIORITY_DESCRIPTION)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Dense, L2-normalized unless asked; base64 string if asked.")
    sparse_embedding: dict[str, float] | None = Field(
        None, description="Extension, with return_sparse: lexical weights keyed by token id or text."
    )
    colbert_embedding: list[list[float]] | list[str] | None = Field(
        None, description="Extension, with return_colbert: per-token vectors (each base64 if asked)."
    )


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens fed to the model, including <s> and </s>.")
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage
