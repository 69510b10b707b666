"""TEI's error body and the shapes /info and /tokenize answer with (TEI's router types)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, StrictBool

from server.api.nulls import NullMeansDefault
from server.api.schema import Text, error_responses

# TEI's ErrorType, serialized as its Rust enum names.
ErrorType = Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]


class TeiError(BaseModel):
    error: str
    error_type: ErrorType


# Documented on every TEI route; the statuses are this server's (see the README), the body TEI's.
TEI_ERROR_RESPONSES = error_responses(
    TeiError, s400="Invalid request (error_type Validation, or Empty for an empty batch).",
    s404="The model is not served here.",
)

TruncationDirection = Literal["Left", "Right", "left", "right"]


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = Field(None, description="Byte offset in the input (UTF-8), null for special tokens.")
    stop: int | None = None


class TokenizeRequest(NullMeansDefault):
    inputs: Text | list[Text]
    add_special_tokens: StrictBool = True
    prompt_name: str | None = Field(None, description="Not supported: these models define no prompts.")


class EmbeddingModelType(BaseModel):
    pooling: str


class ClassifierModelType(BaseModel):
    id2label: dict[str, str]
    label2id: dict[str, int]


class ModelType(BaseModel):
    embedding: EmbeddingModelType | None = None
    reranker: ClassifierModelType | None = None


class Info(BaseModel):
    model_id: str
    model_sha: str | None = None
    model_dtype: str
    served_model_name: str
    model_type: ModelType
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None
